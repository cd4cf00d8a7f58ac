"""The LLM judge stage on the real bundled model: every mode scores or records why not."""

from __future__ import annotations

import copy

import pytest

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.data.rows import new_row
from prefgen.judges.llm_judge import JudgeStage, judge_targets


def _rows() -> list[dict]:
    row = new_row("t.jsonl", 0, "{}")
    row.update(
        id="p1",
        messages=[{"role": "user", "content": "What is 7 + 5?"}],
        domain="math",
        reference="12",
    )
    base = {
        "sample": 0,
        "finish_reason": "stop",
        "n_tokens": 3,
        "system_prompt": None,
        "gen_seconds": 0.0,
        "scores": {},
        "rationales": {},
        "judge_status": {},
        "overall": None,
    }
    texts = {"right": "7 + 5 = 12. The answer is 12.", "wrong": "7 + 5 = 75.", "empty": "   "}
    row["responses"] = [
        {**copy.deepcopy(base), "model": model, "text": text} for model, text in texts.items()
    ]
    rejected = new_row("t.jsonl", 1, "not json")
    rejected.update(status="rejected", stage="ingest", reason="bad_json")
    return [row, rejected]


def _judge(engine, mode: str, rubric: str = "coig_p", retries: int = 1) -> JudgeStage:
    return JudgeStage(
        LLMJudgeConfig(
            name="j",
            rubric=rubric,
            mode=mode,
            max_retries=retries,
            max_tokens=24,
            model=ModelConfig(name="judge", num_cpus=2),
        ),
        engine,
    )


def test_targets_skip_empty_and_rejected():
    assert judge_targets(_rows()) == [(0, 0), (0, 1)]


def test_probability_mode_scores_every_response_in_range(engine):
    out = _judge(engine, "probability")(_rows())
    scored = out[0]["responses"][:2]
    assert all(1.0 <= r["scores"]["j"] <= 10.0 and r["judge_status"]["j"] == "ok" for r in scored)
    assert out[0]["responses"][2]["scores"] == {}  # empty text is not judged
    assert out[1]["responses"] == [] and out[1]["status"] == "rejected"


def test_generate_mode_parses_or_records_failure_never_crashes(engine):
    out = _judge(engine, "generate", retries=1)(_rows())
    for r in out[0]["responses"][:2]:
        status = r["judge_status"]["j"]
        assert r["rationales"]["j"]  # the judge's reply is kept
        if status == "ok":
            assert 1.0 <= r["scores"]["j"] <= 10.0
        else:
            assert status == "parse_failed after 2 tries" and r["scores"]["j"] is None


def test_multi_aspect_rubric_scores_each_aspect(engine):
    out = _judge(engine, "probability", rubric="ultrafeedback")(_rows())
    scores = out[0]["responses"][0]["scores"]
    assert set(scores) == {
        "j.instruction_following",
        "j.honesty",
        "j.truthfulness",
        "j.helpfulness",
    }
    assert all(1.0 <= v <= 5.0 for v in scores.values())


def test_stage_dispatches_on_kind_and_skips_the_judges_own_model(engine):
    stage = JudgeStage(
        LLMJudgeConfig(
            name="dr",
            kind="cdr",
            exclude_self=True,
            same_as=["right"],  # the judge shares weights with the generator "right"
            model=ModelConfig(name="judge", num_cpus=2),
        ),
        engine,
    )
    out = stage(_rows())
    right, wrong, empty = out[0]["responses"]
    assert right["judge_status"]["dr"] == "skipped_self" and "dr" not in right["scores"]
    assert wrong["judge_status"]["dr"] == "ok"
    logged = dict(part.split("=") for part in wrong["rationales"]["dr"].split())  # the CDR path
    strong, weak = float(logged["strong_logprob"]), float(logged["weak_logprob"])
    assert wrong["scores"]["dr"] == pytest.approx(strong - weak, abs=1e-5)
    assert empty["scores"] == {} and out[1]["status"] == "rejected"


def test_rubric_by_domain_picks_the_rows_rubric(engine):
    from prefgen.judges.parsing import weighted_score
    from prefgen.judges.pointwise import judge_pointwise
    from prefgen.judges.rubrics import (
        get_rubric,
        render_judge_messages,
        score_labels,
        score_prefix,
    )

    judge = LLMJudgeConfig(name="j", rubric="coig_p_chat", rubric_by_domain={"MATH": "coig_p_math"})
    rows = _rows()
    judge_pointwise(rows, judge_targets(rows), judge, engine)
    math = get_rubric("coig_p_math")
    conv = render_judge_messages(math, "coig_p", "What is 7 + 5?", "7 + 5 = 75.", "math", "12")
    assert "at most 5" in conv[1]["content"]
    probs = engine.label_probabilities([conv], score_prefix(math), score_labels(math))
    assert rows[0]["responses"][1]["scores"]["j"] == pytest.approx(weighted_score(probs[0]))
