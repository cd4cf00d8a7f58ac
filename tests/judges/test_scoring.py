"""The scoring stage: verifier, hard-rule caps, ensemble with agreement, overall (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from judges.judge_rows import math_row, rejected_row

from prefgen.config import EnsembleConfig, MathVerifierConfig
from prefgen.judges.scoring import (
    apply_verifier_caps,
    default_weights,
    score_row,
    score_rows,
    scoring_options,
    verifier_caps,
)
from prefgen.run.registry import load_pipeline

QUICKSTART = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"
SCALES = {"a": (1.0, 10.0), "b": (1.0, 5.0), "c": (0.0, 1.0), "math": (0.0, 1.0)}
ENSEMBLE = EnsembleConfig(name="ens", members=["a", "b", "c"], aggregation="median")


def _scored_row() -> dict:
    row = math_row()
    for response, scores in zip(
        row["responses"],
        [{"a": 9.0, "b": 5.0, "c": 0.9}, {"a": 7.0, "b": 2.0, "c": 0.1}, {"a": 2.0, "b": 1.0}],
    ):
        response["scores"].update(scores)
    return row


def test_apply_verifier_caps_only_when_the_verifier_failed():
    caps = {"a": {"default": 5.0, "chat": None}, "b": {"math": 2.0}}
    scores = {"a": 8.0, "b": 4.0, "c": 9.0}
    assert apply_verifier_caps(dict(scores), caps, "math", None) == {}
    assert apply_verifier_caps(dict(scores), caps, "math", True) == {}
    lowered = apply_verifier_caps(scores, caps, "Math", False)
    assert lowered == {"a": (8.0, 5.0), "b": (4.0, 2.0)}
    assert scores == {"a": 5.0, "b": 2.0, "c": 9.0}
    chat = {"a": 8.0, "b": 4.0}
    assert apply_verifier_caps(chat, caps, "chat", False) == {} and chat["a"] == 8.0


def test_score_row_caps_then_ensembles_then_overall():
    row = _scored_row()
    caps = {"a": {"default": 5.0}}
    scales = {**SCALES, "ens": (1, 10)}
    out = score_row(row, MathVerifierConfig(), {"ens": 1.0}, scales, ENSEMBLE, caps)
    right, wrong, short = out["responses"]
    assert right["scores"]["math"] == 1.0 and right["scores"]["a"] == 9.0
    # The verifier failed "7 + 5 = 75": the COIG-P-style rule caps judge a at 5.
    assert wrong["scores"]["math"] == 0.0 and wrong["scores"]["a"] == 5.0
    assert (
        wrong["judge_status"]["a"] == "capped"
        and "7 capped at 5" in wrong["rationales"]["a.hard_rule"]
    )
    # Median of the members on 1-10: right (9, 10, 9.1); wrong (5, 3.25, 1.9).
    assert right["scores"]["ens"] == pytest.approx(9.1)
    assert wrong["scores"]["ens"] == pytest.approx(3.25)
    assert short["scores"]["ens"] == pytest.approx(1.5)  # c missing: median of 2 and 1
    assert right["overall"] == pytest.approx(9.1) and right["judge_status"]["ens"] == "ok"
    (agreement,) = out["agreement"]
    assert agreement["name"] == "ens"
    assert set(agreement["kendall_tau"]) == {"a|b", "a|c", "b|c"}
    assert agreement["kendall_tau"]["a|b"] == pytest.approx(1.0)
    assert agreement["pair_order_agreement"]["a|c"] == 1.0


def test_rejected_rows_pass_through_untouched():
    row = rejected_row()
    assert score_row(row, MathVerifierConfig(), {}, SCALES, ENSEMBLE, {}) == rejected_row()


def test_default_weights_let_the_ensemble_stand_in_for_its_members():
    scales = {**SCALES, "ens": (1.0, 10.0)}
    assert default_weights(scales, ENSEMBLE) == {"math": 1.0, "ens": 1.0}
    assert default_weights(scales, None) == dict.fromkeys(scales, 1.0)
    out = score_rows([_scored_row()], MathVerifierConfig(), {}, scales, ENSEMBLE)
    right = out[0]["responses"][0]
    assert right["overall"] == pytest.approx((10.0 + 9.1) / 2)


def _config(tmp_path, judge: dict):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["judge"] = judge
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pipeline(path)


def test_caps_and_options_come_from_the_config(tmp_path):
    cfg = _config(
        tmp_path,
        {
            "llm": [
                {"name": "c", "rubric": "coig_p_chat", "rubric_by_domain": {"Math": "coig_p_math"}},
                {"name": "uf", "rubric": "ultrafeedback"},
                {"name": "pw", "kind": "pairwise"},
            ],
            "ensemble": {"members": ["c", "pw"], "aggregation": "trimmed_mean", "trim": 0.2},
        },
    )
    caps = verifier_caps(cfg)
    assert caps["c"] == {"default": None, "math": 5.0}
    assert caps["uf.truthfulness"] == {"default": 2.0} and "uf.honesty" not in caps
    assert "pw" not in caps  # a win rate is not on the rubric's scale
    options = scoring_options(cfg)
    assert options["ensemble"].members == ["c", "pw"] and options["caps"] == caps
    assert options["scales"]["pw"] == (0.0, 1.0) and options["scales"]["ensemble"] == (1.0, 10.0)
