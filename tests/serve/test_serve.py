"""The reward-model endpoint over real HTTP on 127.0.0.1 (Ray Serve on the session's local Ray).

The apps (`rm` open, `strict` with a token) come from conftest.py / endpoint.py. The model is a
small untrained MiniLM reward model: its numbers mean nothing, but every endpoint must agree with
`prefgen.reward.model.score` run in this process on the same texts. Bad requests are a corpus
(test_bad_requests.py), load and overload in test_load.py, fuzzing in test_fuzz.py.

    .venv/bin/python -m pytest tests/serve -q
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
import requests
from conftest import ROOT

from prefgen.serve.api import (
    Limits,
    Message,
    check_json_values,
    check_limits,
    filter_result,
    rank_order,
    sigmoid,
)
from prefgen.serve.app import create_api
from prefgen.serve.config import ServeConfig
from serve.endpoint import AUTH, GOOD, PROMPT, TOKEN, post

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": PROMPT},
]


@pytest.fixture(scope="module")
def local_rm(rm_dir):
    """The same model in this process: the reference every HTTP answer is checked against."""
    from prefgen.reward.model import load_reward_model, score

    model, tokenizer = load_reward_model(str(rm_dir))

    def rewards(prompts, responses):
        return score(model, tokenizer, prompts, responses)[0]

    return rewards


# -- endpoints -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_health_readiness_and_docs(server):
    assert requests.get(server + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(server + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model"].startswith("minilm-rm@")
    spec = requests.get(server + "/openapi.json", timeout=10).json()
    for path in ("/v1/score", "/v1/compare", "/v1/rank", "/v1/filter", "/get_reward"):
        assert path in spec["paths"]
    assert requests.get(server + "/docs", timeout=10).status_code == 200


@pytest.mark.e2e
def test_score_matches_the_model(server, local_rm):
    items = [
        {"prompt": PROMPT, "response": "Paris."},
        {"prompt": PROMPT, "response": "The capital of France is Berlin."},
        {"prompt": MESSAGES, "response": "Paris is the capital."},
    ]
    resp = post(server, "/v1/score", {"items": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"rewards", "model"}  # no aspect heads -> no aspects key
    expected = local_rm([i["prompt"] for i in items], [i["response"] for i in items])
    assert body["rewards"] == pytest.approx(expected, abs=1e-4)
    assert body["model"] == requests.get(server + "/readyz", timeout=10).json()["model"]


@pytest.mark.e2e
def test_compare_margin_is_the_score_difference(server):
    a, b = "Paris.", "I am not sure, maybe Lyon or Marseille."
    body = post(server, "/v1/compare", {"prompt": PROMPT, "a": a, "b": b}).json()
    scores = post(
        server,
        "/v1/score",
        {"items": [{"prompt": PROMPT, "response": a}, {"prompt": PROMPT, "response": b}]},
    ).json()["rewards"]
    assert body["reward_a"] == pytest.approx(scores[0], abs=1e-4)
    assert body["reward_b"] == pytest.approx(scores[1], abs=1e-4)
    assert body["margin"] == pytest.approx(body["reward_a"] - body["reward_b"], abs=1e-9)
    assert body["p_a_beats_b"] == pytest.approx(1 / (1 + math.exp(-body["margin"])))


@pytest.mark.e2e
def test_rank_orders_by_score(server, local_rm):
    responses = ["Paris.", "Berlin.", "It is Paris, on the Seine.", "No idea.", "paris"]
    body = post(server, "/v1/rank", {"prompt": MESSAGES, "responses": responses}).json()
    assert body["scores"] == pytest.approx(local_rm([MESSAGES] * 5, responses), abs=1e-4)
    assert sorted(body["order"]) == list(range(5))
    ranked = [body["scores"][i] for i in body["order"]]
    assert ranked == sorted(ranked, reverse=True)


@pytest.mark.e2e
def test_filter_keeps_iff_margin_above_min(server):
    x, y = "Paris.", "The capital of France is definitely Berlin, everyone knows it."
    pairs = [
        {"prompt": PROMPT, "chosen": x, "rejected": y},
        {"prompt": PROMPT, "chosen": y, "rejected": x},  # the same pair, swapped
    ]
    body = post(server, "/v1/filter", {"pairs": pairs}).json()
    margins = [r["margin"] for r in body["results"]]
    assert margins[0] == pytest.approx(-margins[1], abs=1e-4) and margins[0] != 0
    for r in body["results"]:
        assert r["keep"] == (r["margin"] > 0)
        assert r["reason"] == (None if r["keep"] else "inverted")
    assert body["kept"] == 1
    # a bar above the margin drops the kept pair too, for a different reason
    bar = abs(margins[0]) + 0.1
    high = post(server, "/v1/filter", {"pairs": pairs, "min_margin": bar}).json()["results"]
    assert [r["keep"] for r in high] == [False, False]
    assert sorted(r["reason"] for r in high) == ["below_min_margin", "inverted"]


@pytest.mark.e2e
def test_get_reward_scores_whole_texts(server, local_rm):
    queries = [f"User: {PROMPT}\nAssistant: Paris.", "User: 2+2?\nAssistant: 5"]
    body = post(
        server, "/get_reward", {"query": queries, "prompts": [PROMPT, "2+2?"], "labels": ["", ""]}
    ).json()
    assert body["rewards"] == pytest.approx(local_rm(["", ""], queries), abs=1e-4)


# -- auth (the strict app) ------------------------------------------------------


@pytest.mark.e2e
def test_auth_required_on_scoring_routes_only(server):
    base = server + "/strict"
    path, body = GOOD
    assert post(base, path, body).status_code == 401
    assert post(base, path, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(base, path, body, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    no_token = post(base, "/get_reward", {"query": ["x"]})
    assert no_token.status_code == 401
    assert no_token.headers.get("WWW-Authenticate") == "Bearer"
    assert TOKEN not in no_token.text
    ok = post(base, path, body, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    assert requests.get(base + "/readyz", timeout=10).status_code == 200
    # the open app has no token at all
    assert post(server, path, body).status_code == 200


@pytest.mark.e2e
def test_logs_never_hold_the_token(server, ray_session):
    """Authorized, anonymous and near-miss requests; then no Ray log holds the token, except
    runtime_env_agent.log, where Ray itself writes the test's runtime_env env_vars in clear."""
    base = server + "/strict"
    path, body = GOOD
    assert post(base, path, body, headers=AUTH).status_code == 200
    assert post(base, path, body, headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert post(base, path, {"items": 3}, headers=AUTH).status_code == 422
    logs = Path(ray_session._private.worker._global_node.get_logs_dir_path())
    leaked = [
        str(f.relative_to(logs))
        for f in logs.rglob("*")
        if f.is_file() and f.name != "runtime_env_agent.log" and TOKEN.encode() in f.read_bytes()
    ]
    assert leaked == []
    assert any((logs / "serve").glob("replica_strict_*")), "no strict replica log was read"


# -- without Ray: helpers, config, the 500 path ----------------------------------------------


def test_pure_helpers():
    assert rank_order([0.1, 0.9, 0.5, 0.9]) == [1, 3, 2, 0]
    assert sigmoid(0.0) == 0.5 and sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    assert filter_result(0.5, 0.2) == {"keep": True, "margin": 0.5, "reason": None}
    assert filter_result(0.1, 0.2)["reason"] == "below_min_margin"
    assert filter_result(0.0, 0.0)["reason"] == "inverted"
    assert filter_result(-0.3, 0.0)["reason"] == "inverted"


def _status_and_detail(call) -> tuple[int, object]:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as caught:
        call()
    return caught.value.status_code, caught.value.detail


def test_check_limits_counts_every_text_the_request_tokenizes():
    limits = Limits(max_items=3, max_texts=8, max_chars=5, max_total_chars=20)
    two = [Message(role="user", content="hi"), Message(role="ai", content="yo")]  # 10 chars
    # a shared prompt (one location) is counted once per response: 3 * (2 + 1) = 9 texts
    shared = [(("prompt",), two, ("responses", i), "r") for i in range(3)]
    status, detail = _status_and_detail(lambda: check_limits(shared, limits))
    assert status == 413 and "9 texts to tokenize" in detail and "(max_texts)" in detail
    # two of them: 6 texts, 2 * (10 + 1) = 22 characters
    status, detail = _status_and_detail(lambda: check_limits(shared[:2], limits))
    assert status == 413 and "22 characters to tokenize" in detail
    assert "the limit is 20 per request (max_total_chars)" in detail
    check_limits(shared[:1], limits)  # 3 texts, 11 characters
    status, detail = _status_and_detail(lambda: check_limits(shared * 2, limits))
    assert status == 413 and "6 texts to score; the limit is 3" in detail  # max_items first
    # over-long texts anywhere, roles included, are located in the body; the prompt once
    long_role = [Message(role="system", content="hi")]
    pairs = [(("prompt",), long_role, ("a",), "abcdef"), (("prompt",), long_role, ("b",), "ok")]
    status, detail = _status_and_detail(lambda: check_limits(pairs, limits))
    assert status == 422
    assert [e["loc"] for e in detail] == [["body", "prompt", 0, "role"], ["body", "a"]]
    assert detail[0]["msg"] == "text has 6 characters; the limit is 5 (max_chars)"
    # /get_reward's empty prompt tokenizes nothing: 3 queries are 3 texts
    check_limits([((), "", ("query", i), "q") for i in range(3)], limits)


def test_check_json_values_stops_at_the_bound():
    limits = Limits(max_items=1, max_texts=1, max_chars=1, max_total_chars=1)  # 20 values
    check_json_values({"items": [{"prompt": "p", "response": "r"}] * 6}, limits)  # 20 values
    for body in (
        {"items": [{"prompt": "p", "response": "r"}] * 7},  # 23 values
        [1] * 10**7,  # refused on its length, without walking it
        {"labels": {str(i): None for i in range(20)}},  # object members count
        {"labels": _nested(5000)},  # deeper than recursion allows: the walk is iterative
    ):
        status, detail = _status_and_detail(lambda b=body: check_json_values(b, limits))
        assert status == 413 and "more than 20 JSON values" in detail
        assert "4 per text of max_texts=1, plus 16" in detail


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_config_validation_names_the_key():
    cfg = ServeConfig(model="m", max_items="64", autoscaling='{"max_replicas": 3}')
    assert cfg.max_items == 64 and cfg.autoscaling == {"max_replicas": 3}
    options = cfg.deployment_options()
    assert "num_replicas" not in options and options["autoscaling_config"]["max_replicas"] == 3
    assert options["backpressure_config"].retry_after_s == 1.0
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeConfig(model="m", max_batch_size=64, max_ongoing_requests=8)
    with pytest.raises(ValueError, match="max_itemz"):
        ServeConfig(model="m", max_itemz=3)
    with pytest.raises(ValueError, match="max_chars"):
        ServeConfig(model="m", max_chars=0)
    with pytest.raises(ValueError, match=r"max_texts \(8\) must be >= max_items \(9\)"):
        ServeConfig(model="m", max_items=9, max_texts=8)
    with pytest.raises(ValueError, match="max_total_chars"):
        ServeConfig(model="m", max_chars=500, max_total_chars=499)
    defaults = ServeConfig(model="m").limits()  # the defaults serve/README.md documents
    assert defaults == Limits(
        max_items=256, max_texts=4096, max_chars=20000, max_total_chars=2_000_000
    )
    assert ServeConfig(model="m").max_body_mb == 16


def test_serve_config_file_builds():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "serve" / "reward.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks first
    [app] = config["applications"]
    assert app["import_path"] == "prefgen.serve:build_app"
    cfg = ServeConfig(**app["args"])
    assert cfg.max_ongoing_requests >= cfg.max_batch_size
    assert config["http_options"]["host"] == "127.0.0.1"


class _FailingScorer:
    model_id, aspect_names = "fake@0", []

    async def score_pairs(self, prompts, responses):
        raise RuntimeError("internal detail that must not leak")

    async def ready(self):
        raise RuntimeError("broken")


def _asgi_call(app, method: str, path: str, body: bytes = b"", chunks: int = 1, headers=None):
    """One request through an ASGI app in-process. `chunks` > 1 sends the body in that many
    pieces without a Content-Length, as a chunked HTTP body arrives."""
    headers = [(b"content-type", b"application/json"), *(headers or [])]
    if chunks == 1:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": headers,
    }  # fmt: skip
    size = -(-len(body) // chunks) if body else 1
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    inbox = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    sent = []

    async def receive():
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_unexpected_errors_are_a_generic_500_with_a_request_id(caplog):
    app = create_api(_FailingScorer(), ServeConfig(model="m"), token=None)
    request = json.dumps(GOOD[1]).encode()
    status, body = _asgi_call(app, "POST", GOOD[0], request, headers=[(b"x-request-id", b"r-42")])
    assert status == 500
    assert json.loads(body) == {"detail": "internal server error", "request_id": "r-42"}
    # the detail is in the server log, under the same id
    assert "r-42" in caplog.text and "internal detail that must not leak" in caplog.text
    status, body = _asgi_call(app, "GET", "/readyz")
    assert status == 503 and b"internal detail" not in body


def test_body_cap_holds_for_chunked_bodies():
    """No Content-Length to refuse early: the guard counts the bytes as they arrive."""
    app = create_api(_FailingScorer(), ServeConfig(model="m", max_body_mb=0.001), token=None)
    big = json.dumps({"items": [{"prompt": "p", "response": "x" * 2000}]}).encode()
    for chunks in (1, 7):
        status, body = _asgi_call(app, "POST", GOOD[0], big, chunks=chunks)
        assert status == 413 and b"body over" in body, (chunks, body)
    # under the cap, a chunked body reaches the route whole (here: the failing scorer's 500)
    small = json.dumps(GOOD[1]).encode()
    assert _asgi_call(app, "POST", GOOD[0], small, chunks=3)[0] == 500


def test_cli_serve_rejects_bad_options_before_starting_ray(tmp_path, capsys, monkeypatch):
    from prefgen.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a saved prefgen reward model" in capsys.readouterr().err
    monkeypatch.delenv("PREFGEN_UNSET_TOKEN_VAR", raising=False)
    assert main(["serve", "--model", str(tmp_path), "--token-env", "PREFGEN_UNSET_TOKEN_VAR"]) == 2
    assert "PREFGEN_UNSET_TOKEN_VAR" in capsys.readouterr().err
