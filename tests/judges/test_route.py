"""Routing by confidence: who labels a prompt, and how the rest of the flow honours it."""

from __future__ import annotations

import pytest
from judges.judge_rows import math_row, rejected_row

from prefgen.config import ConfigError, MathVerifierConfig
from prefgen.judges.llm_judge import judge_targets
from prefgen.judges.route import decide, decide_rows, reward_gap, route_items, write_rewards
from prefgen.judges.scoring import score_rows
from prefgen.pairing.strategies import pair_rows
from prefgen.run.registry import build_stages, load_pipeline
from prefgen.run.sink import shard_counts

QUICKSTART = "pipelines/quickstart.yaml"


def test_band_sends_small_gaps_and_unorderable_prompts_to_the_judges():
    assert decide([3.0, 0.2, None, 1.0], band=1.0) == [
        "reward_model",
        "judges",
        "judges",  # fewer than two rewards: only the judges can pair it
        "reward_model",  # a gap equal to the band is settled
    ]
    assert decide([0.0, 5.0], band=0.0) == ["reward_model", "reward_model"]


def test_budget_judges_the_smallest_gaps_first_and_never_more_than_the_share():
    gaps = [0.5, 4.0, 0.1, 2.0, 3.0, 0.3, 5.0, 6.0, 7.0, 8.0]
    routes = decide(gaps, band=None, judge_share=0.2)
    assert [i for i, r in enumerate(routes) if r == "judges"] == [2, 5]
    routes = decide(gaps, band=0.2, judge_share=0.5)  # with a band, only gaps inside it
    assert [i for i, r in enumerate(routes) if r == "judges"] == [2]
    assert decide([None, None, 9.0], band=None, judge_share=0.0) == [
        "judges",
        "judges",
        "reward_model",
    ]


def _rows() -> list[dict]:
    settled = math_row("settled")
    unsure = math_row("unsure")
    unsure["responses"][1]["finish_reason"] = "error: boom"  # not scored, not routed
    return [settled, rejected_row(), unsure]


def _routed() -> list[dict]:
    rows = _rows()
    items = route_items(rows)
    assert len(items) == 3 + 2  # every scorable response of the ok rows, none of the rejected
    # settled: rewards 3.0 / -2.0 / 0.5 (gap 5); unsure: 0.4 / 0.1 (gap 0.3)
    write_rewards(rows, [3.0, -2.0, 0.5, 0.4, 0.1])
    decide_rows(rows, band=1.0)
    return rows


def test_rewards_are_written_and_each_row_decided():
    settled, rejected, unsure = _routed()
    assert [r["scores"]["reward_model"] for r in settled["responses"]] == [3.0, -2.0, 0.5]
    assert "reward_model" not in unsure["responses"][1]["scores"]
    assert reward_gap(settled) == 5.0 and reward_gap(unsure) == pytest.approx(0.3)
    assert (settled["route"], unsure["route"], rejected["route"]) == (
        "reward_model",
        "judges",
        None,
    )
    # the judges skip what the reward model settled
    assert {i for i, _ in judge_targets([settled, rejected, unsure])} == {2}


def test_settled_prompts_pair_on_rewards_judged_ones_carry_the_reward_margin():
    settled, rejected, unsure = _routed()
    for response, judge_score in zip(unsure["responses"], [9.0, None, 5.0], strict=True):
        if judge_score is not None:  # the judges skip the failed generation too
            response["scores"]["j.overall"] = judge_score
    rows = score_rows(
        [settled, rejected, unsure],
        MathVerifierConfig(enabled=False),
        weights={},
        scales={"j.overall": (1.0, 10.0)},
    )
    assert [r["overall"] for r in settled["responses"]] == [3.0, -2.0, 0.5]
    assert unsure["responses"][0]["overall"] == 9.0  # the reward is not in the judges' overall
    pair_rows(
        rows, "best_vs_worst", min_margin=2.0, min_chosen_score=8.0,
        max_pairs_per_prompt=None, seed=0, judge="j",
    )  # fmt: skip
    [by_reward] = settled["pairs"]
    assert (by_reward["label_source"], by_reward["judge"]) == ("reward_model", "reward_model")
    assert by_reward["margin"] == 5.0 == by_reward["rm_margin"]  # 1-10 thresholds not applied
    [by_judges] = unsure["pairs"]
    assert (by_judges["label_source"], by_judges["judge"]) == ("judge", "j")
    assert by_judges["judge_agreement"] == 1.0  # the reward is no judge vote
    assert by_judges["rm_margin"] == pytest.approx(0.4 - 0.1)  # both scored, and they agree
    counts = shard_counts(rows)
    assert counts["routed"] == {"reward_model": 1, "judges": 1}
    assert counts["rm_judge_agreement"] == {"both_scored": 1, "agree": 1}


def test_route_config_is_checked_and_adds_one_stage_before_the_judges():
    with pytest.raises(ConfigError, match="route.url"):
        load_pipeline(QUICKSTART, ["route.kind=reward_model", "route.band=1"])
    with pytest.raises(ConfigError, match="route.band.*judge_share"):
        load_pipeline(QUICKSTART, ["route.kind=reward_model", "route.url=http://127.0.0.1:1"])
    cfg = load_pipeline(
        QUICKSTART, ["route.kind=reward_model", "route.url=http://127.0.0.1:1", "route.band=1"]
    )
    names = [s.name for s in build_stages(cfg)]
    assert names.index("route") == names.index("judge-coig_p") - 1
    assert names[names.index("route") - 1].startswith("generate")
    # over HTTP it holds no model: the quickstart's generators and judge keep their one pool
    from prefgen.run import pools

    assert sum(1 for step in pools.plan(build_stages(cfg)) if step.pool) == 1


def test_a_budget_is_decided_per_shard_in_a_phase_of_its_own_a_band_in_the_stream():
    from prefgen.run import pools, preflight

    routed = ["route.kind=reward_model", "route.url=http://127.0.0.1:1"]
    by_band = load_pipeline(QUICKSTART, [*routed, "route.band=1"])
    steps = pools.plan(build_stages(by_band))
    assert [name for name, _ in pools.phases(steps, "streaming")] == ["final"]
    by_budget = load_pipeline(QUICKSTART, [*routed, "route.judge_share=0.5"])
    steps = pools.plan(build_stages(by_budget))
    # the router ends the generators' pool; the judges open their own, in the next phase
    assert steps[0].stages[-1].name == "route" and steps[0].stages[-1].on_shard is not None
    assert steps[1].pool and steps[1].stages[0].name == "judge-coig_p"
    for mode in ("streaming", "phased"):
        named = pools.phases(steps, mode)
        assert named[0][1][-1] is steps[0] and named[-1][0] == "final"
    assert [n for n, _ in pools.phases(steps, "streaming")] == ["00-generate-smol-helpful", "final"]
    # preflight counts what is up at once: one pool per phase, not both
    assert [len(phase) for phase in preflight.phase_pools(by_budget)] == [1, 1]
    preflight.check_resources(
        by_budget, {"CPU": max(p.cpus for p in preflight.model_pools(by_budget)) + 0.25}
    )
    # the decision over a whole shard: half of the four orderable prompts go to the judges
    rows = [math_row(f"p{i}") for i in range(4)]
    write_rewards(rows, [v for gap in (4.0, 0.5, 2.0, 1.0) for v in (gap, 0.0, 0.0)])
    steps[0].stages[-1].on_shard(rows)
    assert [r["route"] for r in rows] == ["reward_model", "judges", "reward_model", "judges"]
