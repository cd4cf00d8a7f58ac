"""Request building for generation (pure) and the stage on the real bundled model."""

from __future__ import annotations

from prefgen.config import GenerateConfig, ModelConfig
from prefgen.data.rows import new_row
from prefgen.generate.generator import GenerateStage, build_requests, with_system_prompt


def _rows():
    ok = new_row("f", 0, "{}")
    ok.update(id="p1", messages=[{"role": "user", "content": "Name a color."}])
    bad = new_row("f", 1, "x")
    bad.update(status="rejected", reason="bad_json")
    return [ok, bad]


def _model(**kw) -> ModelConfig:
    return GenerateConfig(max_tokens=8).resolved(ModelConfig(name="m", samples_per_prompt=2, **kw))


def test_requests_per_sample_with_distinct_stable_seeds():
    reqs = build_requests(_rows(), _model(system_prompt="Be brief."), seed=0)
    assert [(i, s) for i, s, _ in reqs] == [(0, 0), (0, 1)]
    assert reqs[0][2].seed != reqs[1][2].seed
    assert (
        reqs[0][2].seed
        == build_requests(_rows(), _model(system_prompt="Be brief."), seed=0)[0][2].seed
    )
    assert reqs[0][2].seed != build_requests(_rows(), _model(), seed=1)[0][2].seed
    assert reqs[0][2].messages[0] == {"role": "system", "content": "Be brief."}
    assert reqs[0][2].max_tokens == 8


def test_user_system_prompt_wins():
    msgs = [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
    assert with_system_prompt(msgs, "model's") == msgs


def test_stage_appends_responses_and_passes_rejects_through(engine):
    model = _model(num_cpus=2, system_prompt="Answer in one word.")
    stage = GenerateStage(model, seed=0, generate=None, engine=engine)
    out = stage(_rows())
    ok, bad = out
    assert [(r["model"], r["sample"]) for r in ok["responses"]] == [("m", 0), ("m", 1)]
    assert all(
        r["n_tokens"] > 0 and r["finish_reason"] in ("stop", "length") for r in ok["responses"]
    )
    assert ok["responses"][0]["system_prompt"] == "Answer in one word."
    assert bad["responses"] == [] and bad["status"] == "rejected"
