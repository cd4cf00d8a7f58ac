"""The two Serve apps the tests in this folder share (started by conftest.py), their limits,
and small request helpers.

- `rm` at /: open, small limits (cheap to exceed), a 1 MB body cap.
- `strict` at /strict: bearer token, a queue of one (overload is easy to provoke).
"""

from __future__ import annotations

import requests

MAX_ITEMS, MAX_TEXTS, MAX_CHARS, MAX_TOTAL_CHARS, MAX_BODY_MB = 8, 32, 400, 2000, 1
TOKEN_ENV, TOKEN = "PREFGEN_TEST_RM_TOKEN", "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RETRY_AFTER_S = 2  # the strict app's Retry-After
PROMPT = "What is the capital of France?"
GOOD = ("/v1/score", {"items": [{"prompt": PROMPT, "response": "Paris."}]})


def app_configs(model_dir: str) -> dict[str, dict]:
    """`build_app` args per app name (the route prefix is / for rm, /strict for strict)."""
    common = {"model": model_dir, "num_cpus": 0.5, "num_threads": 1}
    return {
        "rm": {
            **common,
            "max_items": MAX_ITEMS,
            "max_texts": MAX_TEXTS,
            "max_chars": MAX_CHARS,
            "max_total_chars": MAX_TOTAL_CHARS,
            "max_body_mb": MAX_BODY_MB,
        },
        "strict": {
            **common,
            "max_batch_size": 2,
            "max_ongoing_requests": 2,
            "max_queued_requests": 1,
            "retry_after_s": RETRY_AFTER_S,
            "auth_token_env": TOKEN_ENV,
            # Test only: Ray's runtime_env_agent.log records env_vars in clear (see serve.py).
            "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}},
        },
    }


def post(base: str, path: str, body=None, **kwargs) -> requests.Response:
    return requests.post(base + path, json=body, timeout=60, **kwargs)


def assert_still_serving(base: str, headers: dict | None = None) -> None:
    resp = post(base, *GOOD, headers=headers)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["rewards"]) == 1
