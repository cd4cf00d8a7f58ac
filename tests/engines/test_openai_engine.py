"""The openai engine against a real OpenAI-compatible HTTP server on 127.0.0.1 (no mocks):
generation, judge label probabilities, retries under injected faults, auth, budget, secrecy,
and GenerateStage on Ray Data."""

from __future__ import annotations

import os
import time

import pytest
import requests
from conftest import free_port
from engines.openai_server import OpenAICompatibleServer

from prefgen.config import GenerateConfig, ModelConfig
from prefgen.engines import GenerationRequest, load_engine
from prefgen.engines.openai import BUDGET_EXHAUSTED, OpenAIAuthError, OpenAIEngine, read_usage
from prefgen.judges.rubrics import get_rubric, render_judge_messages, score_labels, score_prefix

KEY_ENV = "PREFGEN_TEST_OPENAI_KEY"
KEY = "sk-test-" + os.urandom(8).hex()
# Set at import, before the session's Ray starts, so its workers inherit it: the same way a
# cluster gets it (exported on every node), since the engine reads it inside the actor.
os.environ[KEY_ENV] = KEY


@pytest.fixture(scope="module")
def server(engine):
    srv = OpenAICompatibleServer(engine, KEY, free_port()).start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    server.reset()
    made = []

    def make(**kw) -> OpenAIEngine:
        args = dict(
            name="api",
            base_url=server.base_url,
            model="smol",
            api_key_env=KEY_ENV,
            max_concurrent_requests=1,  # faults are consumed in request order
            backoff_base_s=0.01,
            shared_ledger=False,
        )
        made.append(OpenAIEngine(**{**args, **kw}))
        return made[-1]

    return make


def _request(seed: int = 0, max_tokens: int = 6) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": "Name a color."}], max_tokens, temperature=0.7, seed=seed
    )


def _judge_conversation() -> list[dict]:
    rubric = get_rubric("ultrafeedback")
    return render_judge_messages(
        rubric, "helpfulness", "What is 2+2?", "2+2 is 5.", "math", reference=None
    )


def test_generation_with_usage_and_concurrency(api, server):
    engine = api(max_concurrent_requests=3)
    outs = engine.generate([_request(seed) for seed in range(3)])
    assert all(o.text and o.finish_reason in ("stop", "length") for o in outs)
    assert all(0 < o.n_tokens <= 6 and o.prompt_tokens > 5 for o in outs)
    stats = engine.stats()
    assert stats["requests"] == 3 and stats["retries"] == 0 and stats["errors"] == 0
    assert stats["completion_tokens"] == sum(o.n_tokens for o in outs)
    assert stats["prompt_tokens"] == sum(o.prompt_tokens for o in outs)
    assert sorted(b["seed"] for b in server.bodies) == [0, 1, 2]
    assert all("top_k" not in b for b in server.bodies)  # hosted APIs reject it


def test_prefilled_judge_matches_the_transformers_engine(api, engine):
    rubric = get_rubric("ultrafeedback")
    conv, prefix, labels = _judge_conversation(), score_prefix(rubric), score_labels(rubric)
    (over_http,) = api(engine_kwargs={"assistant_prefill": True}).label_probabilities(
        [conv], prefix, labels
    )
    (in_process,) = engine.label_probabilities([conv], prefix, labels)
    assert sum(over_http.values()) == pytest.approx(1.0)
    for label in labels:  # all five digits are in the top 20, so nothing is lost
        assert over_http[label] == pytest.approx(in_process[label], abs=2e-3)


def test_judge_without_prefill_asks_for_the_final_line(api, server):
    rubric = get_rubric("ultrafeedback")
    labels = score_labels(rubric)
    (probs,) = api().label_probabilities([_judge_conversation()], score_prefix(rubric), labels)
    (body,) = server.bodies
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["messages"][-1]["content"].endswith("Write nothing else.")
    assert "continue_final_message" not in body
    assert list(probs) == labels
    # The reply is greedy, so asking again gives the same tokens. By the contract, a score is
    # read after the prefix or at the first token that is a label; with neither there is no
    # mass to read and none is guessed.
    reply = requests.post(
        server.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    ).json()
    tokens = [t["token"] for t in reply["choices"][0]["logprobs"]["content"]]
    wrote_a_score = score_prefix(rubric) in "".join(tokens) or any(
        t.strip() in labels for t in tokens
    )
    if wrote_a_score:
        assert sum(probs.values()) == pytest.approx(1.0), (tokens, probs)
    else:
        assert set(probs.values()) == {0.0}, (tokens, probs)


def test_429_with_retry_after_and_503_are_retried(api, server):
    engine = api()
    server.inject(("status", 429, {"Retry-After": "1"}), ("status", 503, {}))
    start = time.monotonic()
    (out,) = engine.generate([_request()])
    assert time.monotonic() - start >= 1.0  # Retry-After honoured
    assert out.text and not out.finish_reason.startswith("error")
    stats = engine.stats()
    assert (stats["requests"], stats["retries"], stats["rate_limited"]) == (3, 2, 1)
    assert server.received == 3


def test_timeout_is_retried(api, server):
    engine = api(request_timeout_s=0.5)
    # the retry meets a 400 rather than the model, so no generation races the timeout
    server.inject(("hang", 1.5), ("status", 400, {}))
    (out,) = engine.generate([_request()])
    assert out.finish_reason == "error: http 400: injected 400"
    assert engine.stats()["retries"] == 1 and server.received == 2


def test_5xx_past_max_retries_becomes_an_error_completion(api, server):
    engine = api(max_retries=2)
    server.inject(*[("status", 500, {})] * 3)
    first, second = engine.generate([_request(), _request(1)])
    assert first.text == "" and first.n_tokens == 0
    assert first.finish_reason == "error: http 500 (after 3 attempts)"
    assert second.text  # the batch goes on
    assert engine.stats()["errors"] == 1


def test_400_is_not_retried(api, server):
    engine = api()
    server.inject(("status", 400, {}))
    (out,) = engine.generate([_request()])
    assert out.finish_reason == "error: http 400: injected 400"
    assert engine.stats()["retries"] == 0 and server.received == 1


def test_bad_key_fails_fast_naming_the_variable_not_the_key(api, server, monkeypatch):
    wrong = "sk-wrong-" + os.urandom(8).hex()
    monkeypatch.setenv("PREFGEN_TEST_BAD_KEY", wrong)
    engine = api(api_key_env="PREFGEN_TEST_BAD_KEY", max_retries=3)
    with pytest.raises(OpenAIAuthError) as info:
        engine.generate([_request()])
    message = str(info.value)
    assert "PREFGEN_TEST_BAD_KEY" in message and "401" in message
    assert wrong not in message and wrong not in repr(info.value)
    assert server.received == 1  # not retried
    with pytest.raises(OpenAIAuthError):
        engine.label_probabilities([_judge_conversation()], "Rating: [", ["1", "2"])
    assert server.received == 1  # later calls fail without a request


def test_missing_key_variable_fails_at_construction(api, monkeypatch):
    monkeypatch.delenv("PREFGEN_TEST_UNSET_KEY", raising=False)
    with pytest.raises(OpenAIAuthError, match="PREFGEN_TEST_UNSET_KEY"):
        api(api_key_env="PREFGEN_TEST_UNSET_KEY")


def test_budget_exhaustion_gives_error_completions(api, server):
    engine = api(max_requests=2)
    outs = engine.generate([_request(s) for s in range(3)])
    assert [o.finish_reason == BUDGET_EXHAUSTED for o in outs] == [False, False, True]
    assert [o.finish_reason for o in engine.generate([_request()])] == [BUDGET_EXHAUSTED]
    assert server.received == 2 and engine.stats()["budget_refused"] == 2


def test_key_never_in_repr_stats_or_config_dumps(api):
    engine = api()
    model = ModelConfig(name="api", engine="openai", base_url="http://x/v1", api_key_env=KEY_ENV)
    dumps = [
        repr(engine),
        str(engine),
        repr(vars(engine)),
        repr(engine.stats()),
        repr(model),
        model.model_dump_json(),
    ]
    assert all(KEY not in text for text in dumps)
    assert KEY_ENV in repr(engine)


def test_generate_stage_on_ray_data_shares_one_budget(server, ray_session):
    """GenerateStage in a Ray actor: the key comes from the worker's env, the budget from the
    ledger actor the driver opened (as the pipeline should), shared across processes."""
    import ray

    from prefgen.config import ExecutionConfig, PipelineConfig
    from prefgen.data.rows import new_row, to_rows, to_table
    from prefgen.engines.openai import open_usage_ledger
    from prefgen.run import pools
    from prefgen.run.registry import generate_stages

    server.reset()
    model = GenerateConfig().resolved(
        ModelConfig(
            name="api-gen",
            engine="openai",
            path="smol",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            samples_per_prompt=2,
            max_requests=3,
            max_tokens=6,
            num_cpus=0.25,
        )
    )
    assert type(load_engine(model)).__name__ == "OpenAIEngine"
    ledger = open_usage_ledger(model)  # noqa: F841 - the driver keeps the ledger alive
    rows = []
    for i, text in enumerate(["Name a color.", "Name a fruit."]):
        row = new_row("f", i, "{}")
        row.update(id=f"p{i}", messages=[{"role": "user", "content": text}])
        rows.append(row)
    cfg = PipelineConfig(
        input={"path": "x.jsonl"}, output={"path": "out"}, generate={"models": [model]}
    )
    (step,) = pools.plan(generate_stages(cfg))  # the pool the pipeline would build
    ds = pools.apply(ray.data.from_arrow(to_table(rows)), step, ExecutionConfig())
    out = ds.to_arrow_refs()
    table = ray.get(out)
    responses = [r for t in table for row in to_rows(t) for r in row["responses"]]
    assert len(responses) == 4
    reasons = sorted(r["finish_reason"] for r in responses)
    assert reasons.count(BUDGET_EXHAUSTED) == 1
    assert all(r["text"] for r in responses if r["finish_reason"] != BUDGET_EXHAUSTED)
    usage = read_usage(model)
    assert usage["granted"] == 3 and usage["budget_refused"] == 1
    assert usage["requests"] == 3 and usage["completion_tokens"] > 0
    assert usage["prompt_tokens"] > 0
    assert server.received == 3


@pytest.mark.e2e
def test_pipeline_with_an_openai_generator_records_usage(ray_session, server, tmp_path):
    """The quickstart with one generator behind the loopback API: its usage in the manifest."""
    import json

    from conftest import QUICKSTART, tiny_overrides

    from prefgen.data.manifest import read_manifest, read_rows
    from prefgen.run.pipeline import run
    from prefgen.run.registry import load_pipeline

    server.reset()
    out = tmp_path / "run"
    api = "generate.models.0"
    cfg = load_pipeline(
        QUICKSTART,
        [
            *tiny_overrides(out, limit=2, max_tokens=8),
            f"{api}.engine=openai",
            f"{api}.base_url={server.base_url}",
            f"{api}.api_key_env={KEY_ENV}",
            f"{api}.path=smol",
            f"{api}.max_requests=50",
            # an HTTP client, not a model: a small pool beside the shared SmolLM2 one
            f"{api}.concurrency=1",
            f"{api}.num_cpus=0.1",
            *[f"{k}.concurrency=1" for k in ("generate.models.1", "generate.models.2")],
            "judge.llm.0.model.concurrency=1",
        ],
    )
    run(cfg)
    manifest = read_manifest(str(out))
    usage = manifest["usage"]["smol-helpful"]
    assert usage["granted"] == 2 and usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["max_requests"] == 50 and usage["budget_refused"] == 0
    texts = [r for r in read_rows(str(out), manifest, "responses") if r["model"] == "smol-helpful"]
    assert len(texts) == 2 and all(r["finish_reason"] in ("stop", "length") for r in texts)
    assert KEY not in json.dumps(manifest)
