"""Judge configuration: kinds, per-domain rubrics, self-exclusion, CDR and ensemble fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefgen.config import ConfigError
from prefgen.judges.names import score_scales
from prefgen.run.registry import load_pipeline

QUICKSTART = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"


def _load(tmp_path, judge: dict):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["judge"] = judge
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pipeline(path)


def _error(tmp_path, judge: dict) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, judge)
    return str(info.value)


def test_every_kind_loads_with_its_scales(tmp_path):
    cfg = _load(
        tmp_path,
        {
            "llm": [
                {"name": "point", "rubric_by_domain": {"math": "coig_p_math"}},
                {"name": "hs", "rubric": "helpsteer2", "kind": "listwise", "seed": 3},
                {
                    "name": "pair",
                    "kind": "pairwise",
                    "max_comparisons": 3,
                    "exclude_self": True,
                    "same_as": ["smol-helpful"],
                },
                {
                    "name": "dr",
                    "kind": "cdr",
                    "criteria": "Be exact.",
                    "weak_model": {"name": "weak", "system_prompt": "Be brief."},
                },
            ],
            "ensemble": {
                "name": "panel",
                "members": ["point", "pair", "dr"],
                "aggregation": "median",
            },
            "weights": {"panel": 1.0},
        },
    )
    point, hs, pair, dr = cfg.judge.llm
    assert point.kind == "pointwise" and point.rubric_by_domain == {"math": "coig_p_math"}
    assert hs.kind == "listwise" and hs.seed == 3
    assert pair.max_comparisons == 3 and pair.exclude_self and pair.same_as == ["smol-helpful"]
    assert dr.weak_model.system_prompt == "Be brief." and point.weak_model is None
    scales = score_scales(cfg)
    assert scales["point"] == (1.0, 10.0) and scales["hs.verbosity"] == (0.0, 4.0)
    assert scales["pair"] == (0.0, 1.0) and scales["dr"] == (-10.0, 10.0)
    assert scales["panel"] == (1.0, 10.0)


@pytest.mark.parametrize(
    ("judge", "key", "words"),
    [
        ({"llm": [{"name": "j", "kind": "votes"}]}, "judge.llm.0.kind", "pointwise"),
        (
            {"llm": [{"name": "j", "rubric_by_domain": {"math": "nope"}}]},
            "judge.llm.0.rubric_by_domain.math",
            "unknown rubric",
        ),
        (  # a 1-5 multi-aspect rubric cannot stand in for a 1-10 single score
            {"llm": [{"name": "j", "rubric_by_domain": {"code": "ultrafeedback"}}]},
            "judge.llm.0.rubric_by_domain.code",
            "same scores and scale",
        ),
        ({"llm": [{"name": "j"}, {"name": "j"}]}, "judge.llm", "unique"),
        (
            {"llm": [{"name": "j", "kind": "pairwise", "max_comparisons": 0}]},
            "judge.llm.0.max_comparisons",
            ">= 1",
        ),
        (
            {"llm": [{"name": "j", "kind": "cdr", "cdr_range": [3.0, 1.0]}]},
            "judge.llm.0.cdr_range",
            "low < high",
        ),
        (
            {"llm": [{"name": "j", "kind": "cdr", "weak_model": {"name": "w", "batch_size": 0}}]},
            "judge.llm.0.weak_model.batch_size",
            ">= 1",
        ),
        (
            {"llm": [{"name": "j"}], "ensemble": {"members": ["j", "ghost"]}},
            "judge.ensemble.members",
            "ghost",
        ),
        ({"llm": [{"name": "j"}], "ensemble": {"members": ["j"]}}, "judge.ensemble.members", "two"),
        (
            {
                "llm": [{"name": "j"}, {"name": "k"}],
                "ensemble": {"members": ["j", "k"], "aggregation": "mode"},
            },
            "judge.ensemble.aggregation",
            "trimmed_mean",
        ),
        (
            {
                "llm": [{"name": "j"}, {"name": "k"}],
                "ensemble": {"members": ["j", "k"], "trim": 0.5},
            },
            "judge.ensemble.trim",
            "0.5",
        ),
        (
            {
                "llm": [{"name": "j"}, {"name": "k"}],
                "ensemble": {"name": "math", "members": ["j", "k"]},
            },
            "judge.ensemble.name",
            "already a score name",
        ),
    ],
)
def test_judge_errors_name_the_key(tmp_path, judge, key, words):
    message = _error(tmp_path, judge)
    assert f"key '{key}'" in message and words in message
