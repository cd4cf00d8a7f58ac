"""CDR density-ratio judging: conversations and criteria (pure), then the real model."""

from __future__ import annotations

import pytest
from judges.judge_rows import math_row

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.judges.cdr import (
    DEFAULT_CRITERIA,
    cdr_conversations,
    criteria_for,
    density_ratio,
    judge_cdr,
)
from prefgen.judges.shared import judge_targets

USER = [{"role": "user", "content": "Hi"}]


def test_conversations_put_criteria_only_on_the_strong_side():
    strong, weak = cdr_conversations(USER, "Be exact.", None)
    assert strong == [{"role": "system", "content": "Be exact."}, *USER]
    assert weak == USER
    _, weak = cdr_conversations(USER, "Be exact.", "You are a plain model.")
    assert weak[0] == {"role": "system", "content": "You are a plain model."}
    # A prompt's own system turn is kept on both sides; the criteria extend the strong one.
    own = [{"role": "system", "content": "Answer in French."}, *USER]
    strong, weak = cdr_conversations(own, "Be exact.", "ignored")
    assert strong[0]["content"] == "Answer in French.\n\nBe exact." and weak == own
    assert own[0]["content"] == "Answer in French."  # input not mutated


def test_criteria_per_domain_then_configured_then_default():
    judge = LLMJudgeConfig(name="c", kind="cdr", criteria_by_domain={"Math": "Be exact."})
    assert criteria_for(judge, "math") == "Be exact."
    assert criteria_for(judge, "chat") == DEFAULT_CRITERIA
    judge.criteria = "Be kind."
    assert criteria_for(judge, None) == "Be kind."


def test_density_ratio():
    assert density_ratio(-3.0, -5.5) == 2.5
    assert density_ratio(None, -1.0) is None and density_ratio(-1.0, None) is None


def test_stage_score_is_strong_minus_weak_logprob(engine):
    judge = LLMJudgeConfig(
        name="cdr",
        kind="cdr",
        criteria="Answer arithmetic correctly and show the result.",
        model=ModelConfig(name="strong", batch_size=2),
        weak_model=ModelConfig(name="weak", system_prompt="You are a careless assistant."),
    )
    rows = [math_row()]
    judge_cdr(rows, judge_targets(rows), judge, engine, engine)
    strong_conv, weak_conv = cdr_conversations(
        rows[0]["messages"], judge.criteria, "You are a careless assistant."
    )
    texts = [r["text"] for r in rows[0]["responses"]]
    strong = engine.response_logprobs([strong_conv] * len(texts), texts)
    weak = engine.response_logprobs([weak_conv] * len(texts), texts)
    for k, response in enumerate(rows[0]["responses"]):
        assert response["scores"]["cdr"] == pytest.approx(strong[k] - weak[k], abs=1e-3)
        assert response["judge_status"]["cdr"] == "ok"
        logged = dict(part.split("=") for part in response["rationales"]["cdr"].split())
        assert float(logged["strong_logprob"]) == pytest.approx(strong[k], abs=1e-3)
        assert float(logged["weak_logprob"]) == pytest.approx(weak[k], abs=1e-3)
