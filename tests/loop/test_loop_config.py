"""The loop's config and its submission as one Ray job: checked before anything runs."""

from __future__ import annotations

import pytest
from conftest import ROOT

from prefgen.config import ConfigError
from prefgen.loop.rounds import load_loop, round_summary
from prefgen.run.jobs import entrypoint, validate

LOOP = str(ROOT / "pipelines" / "loop.yaml")


def test_shipped_loop_config_loads_and_names_its_parts():
    cfg = load_loop(LOOP)
    assert [r.input for r in cfg.rounds] == [
        "pipelines/data/loop_round1.jsonl",
        "pipelines/data/loop_round2.jsonl",
    ]
    assert cfg.route.judge_share == 0.5 and cfg.route.band is None
    with pytest.raises(ConfigError, match="key 'route.judge_share'"):  # no budget, no band
        load_loop(LOOP, ["route.judge_share=null"])
    with pytest.raises(ConfigError, match="key 'rounds'"):
        load_loop(LOOP, ["rounds=[]"])


def test_submit_recognises_a_loop_config():
    assert validate(LOOP, ["output=s3://b/loop"]) == ("loop", "loop", "s3://b/loop")
    assert validate(str(ROOT / "pipelines" / "quickstart.yaml"), [])[0] == "run"
    assert entrypoint("pipelines/loop.yaml", ["output=x"], verb="loop") == (
        "prefgen loop pipelines/loop.yaml output=x"
    )


def test_round_summary_counts_who_judged():
    manifest = {
        "seconds": 12.0,
        "counts": {
            "prompts_ok": 8,
            "pairs": 6,
            "routed": {"judges": 3, "reward_model": 5},
            "rm_judge_agreement": {"both_scored": 2, "agree": 1},
            "stage_seconds": {"judge-coig_p": 4.0, "route": 0.5, "generate-smol": 9.0},
            "models": {"a": {"tokens": 100}, "b": {"tokens": 50}},
        },
    }
    routing = {"model_version": "model@abc", "band": 0.4}
    s = round_summary(manifest, "out/round-2", routing)
    assert (s["judged_prompts"], s["settled_by_reward_model"], s["judged_share"]) == (3, 5, 3 / 8)
    assert (s["judge_seconds"], s["route_seconds"], s["generated_tokens"]) == (4.0, 0.5, 150)
    assert s["rm_judge_agreement"] == 0.5 and s["routed_by"] == "model@abc"
    unrouted = round_summary(manifest, "out/round-1", None)
    assert unrouted["judged_prompts"] == 8 and unrouted["band"] is None
