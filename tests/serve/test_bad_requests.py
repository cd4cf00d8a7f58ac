"""The bad-request corpus (tests/fixtures/bad_requests/requests.yaml) against the live endpoint.

Every case must get its 4xx with a message that says what is wrong, never a 500 or a trace,
never an echo of the token, and the app must keep serving afterwards.

    .venv/bin/python -m pytest tests/serve/test_bad_requests.py -q
"""

from __future__ import annotations

import pytest
import requests
import yaml
from conftest import ROOT

from serve.endpoint import AUTH, TOKEN, assert_still_serving

CASES = yaml.safe_load((ROOT / "tests" / "fixtures" / "bad_requests" / "requests.yaml").read_text())


def expand(value):
    """{$text: S, times: N} -> S * N; {$repeat: X, times: N} -> [X] * N; the rest recursively."""
    if isinstance(value, dict) and "$text" in value:
        return value["$text"] * value["times"]
    if isinstance(value, dict) and "$repeat" in value:
        return [expand(value["$repeat"]) for _ in range(value["times"])]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def request_args(case: dict) -> dict:
    """`requests.request` keyword arguments for a corpus case."""
    headers = dict(case.get("headers") or {})
    if case.get("auth"):
        headers.update(AUTH)
    args: dict = {"headers": headers}
    if "json" in case:
        args["json"] = expand(case["json"])
    elif "raw" in case:
        raw = expand(case["raw"])
        raw = "".join(raw) if isinstance(raw, list) else raw
        data = raw.encode(case.get("encoding", "utf-8"), errors="surrogatepass")
        if case.get("chunked"):
            pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            args["data"] = iter(pieces)  # a generator body goes out chunked, no Content-Length
        else:
            args["data"] = data
    return args


def test_corpus_is_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for case in CASES:
        assert set(case) <= {
            "name", "app", "method", "path", "headers", "auth", "json", "raw", "encoding",
            "chunked", "expect",
        }, case["name"]  # fmt: skip
        assert case.get("app", "open") in ("open", "strict"), case["name"]
        assert 400 <= case["expect"]["status"] < 500 and case["expect"]["detail"], case["name"]


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_request_gets_its_4xx_and_a_message(server, case):
    base = server + ("/strict" if case.get("app") == "strict" else "")
    resp = requests.request(
        case.get("method", "POST"), base + case["path"], timeout=60, **request_args(case)
    )
    expect = case["expect"]
    assert resp.status_code == expect["status"], resp.text[:500]
    assert expect["detail"] in resp.text, resp.text[:500]
    assert resp.json()["detail"]  # a JSON body with a message, not an empty or HTML page
    assert "Traceback" not in resp.text and TOKEN not in resp.text
    if expect["status"] == 401:
        assert resp.headers.get("WWW-Authenticate") == "Bearer"
    if expect["status"] == 422 and isinstance(resp.json()["detail"], list):
        # FastAPI's error shape, minus `input`: a rejected text is never echoed back
        assert all({"loc", "msg", "type"} == set(e) for e in resp.json()["detail"])
    assert_still_serving(base, headers=AUTH if case.get("app") == "strict" else None)
