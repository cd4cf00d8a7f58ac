"""Pair construction: strategies, filters, determinism and the output schema."""

from __future__ import annotations

import itertools
import math

import pytest

from prefgen.data.schema import pairs_table, score_dict
from prefgen.pairing.strategies import (
    NO_PAIR_REASONS,
    STRATEGIES,
    build_pairs,
    judge_votes,
    length_ratio,
    output_pair,
    passes_rm_agreement,
    preference_strength,
    routing_score,
)

PAIR_KEYS = {
    "id", "prompt_id", "prompt", "chosen", "rejected", "chosen_score", "rejected_score",
    "margin", "chosen_model", "rejected_model", "domain", "judge", "strategy", "meta",
    "chosen_scores", "rejected_scores", "strength", "judge_agreement", "routing_score",
    "label_source", "rm_margin",
}  # fmt: skip


def pairs_of(row, strategy, **kwargs):
    """build_pairs, then each pair as the pairs table records it (prompt and meta added)."""
    pairs, reason = build_pairs(row, strategy, **kwargs)
    return [output_pair(p, row["messages"], row.get("meta", {})) for p in pairs], reason


def make_row(scores, row_id="p-abc", texts=None, domain="math"):
    responses = []
    for i, s in enumerate(scores):
        responses.append(
            {
                "model": f"m{i % 3}",
                "sample": i,
                "text": texts[i] if texts else f"answer {i}",
                "finish_reason": "stop",
                "n_tokens": 5,
                "system_prompt": None,
                "scores": {"coig_p": s},
                "overall": s,
            }
        )
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": "What is 17*23?"}],
        "domain": domain,
        "reference": "391",
        "meta": {"source": "unit"},
        "responses": responses,
    }


SPREAD = [1.0, 2.5, 4.0, 5.0, 6.5, 8.0, 9.0, 9.5]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("min_margin", [None, 0.0, 1.0, 3.0])
def test_invariants_hold_for_every_strategy(strategy, min_margin):
    pairs, reason = pairs_of(make_row(SPREAD), strategy, min_margin=min_margin, judge="j")
    assert pairs and reason is None
    effective = (
        (2.0 if strategy == "random_with_margin" else 0.0) if min_margin is None else min_margin
    )
    for p in pairs:
        assert set(p) == PAIR_KEYS
        assert p["chosen_score"] > p["rejected_score"]
        assert p["margin"] == pytest.approx(p["chosen_score"] - p["rejected_score"])
        assert p["margin"] > effective
        assert p["strategy"] == strategy and p["judge"] == "j" and p["domain"] == "math"
        assert len(p["id"]) == 16 and int(p["id"], 16) >= 0
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert [p["margin"] for p in pairs] == sorted((p["margin"] for p in pairs), reverse=True)


def test_pair_schema_contents():
    row = make_row([2.0, 9.0])
    row["responses"][1]["system_prompt"] = "Be helpful."
    (pair,), _ = pairs_of(row, "best_vs_worst")
    assert pair["prompt_id"] == "p-abc"
    assert pair["prompt"] == row["messages"]
    assert pair["chosen"] == [{"role": "assistant", "content": "answer 1"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "answer 0"}]
    assert (pair["chosen_model"], pair["rejected_model"]) == ("m1", "m0")
    assert pair["meta"] == {
        "chosen_sample": 1,
        "rejected_sample": 0,
        "chosen_system_prompt": "Be helpful.",
        "rejected_system_prompt": None,
        "chosen_scores": {"coig_p": 9.0},
        "rejected_scores": {"coig_p": 2.0},
        "prompt_meta": {"source": "unit"},
    }
    # The pair id is stable: same prompt and responses, same id, independent of strategy.
    (again,), _ = pairs_of(row, "all_pairs")
    assert again["id"] == pair["id"]


def test_best_vs_worst_picks_extremes():
    (pair,), _ = pairs_of(make_row([5.0, 1.0, 9.0, 3.0]), "best_vs_worst")
    assert (pair["chosen_score"], pair["rejected_score"]) == (9.0, 1.0)


def test_best_vs_random_rejects_only_strictly_lower():
    row = make_row([9.0, 9.0, 4.0, 3.0, 2.0])
    seen = set()
    for seed in range(40):
        (pair,), _ = pairs_of(row, "best_vs_random", seed=seed)
        assert pair["chosen_score"] == 9.0
        seen.add(pair["rejected_score"])
    assert seen == {4.0, 3.0, 2.0}  # random over all strictly lower, never the tied 9.0


def test_best_vs_random_respects_margin_when_drawing():
    row = make_row([9.0, 8.0, 3.0])
    for seed in range(20):
        (pair,), _ = pairs_of(row, "best_vs_random", min_margin=2.0, seed=seed)
        assert pair["rejected_score"] == 3.0


def test_all_pairs_counts_and_cap_keeps_largest_margins():
    row = make_row([1.0, 2.0, 3.0, 4.0, 4.0])
    pairs, _ = pairs_of(row, "all_pairs")
    assert len(pairs) == 9  # C(5,2)=10 minus the one tie
    capped, _ = pairs_of(row, "all_pairs", max_pairs_per_prompt=3)
    assert [p["margin"] for p in capped] == [3.0, 3.0, 2.0]


def test_random_with_margin_default_margin_and_cap():
    row = make_row([float(i) for i in range(1, 11)])
    pairs, _ = pairs_of(row, "random_with_margin")
    assert len(pairs) == 6  # default cap
    assert all(p["margin"] > 2.0 for p in pairs)
    pairs, _ = pairs_of(row, "random_with_margin", max_pairs_per_prompt=50)
    eligible = sum(1 for a, b in itertools.combinations(range(1, 11), 2) if abs(a - b) > 2)
    assert len(pairs) == eligible  # no duplicates, every qualifying pair once
    unordered = {
        frozenset({(p["chosen_model"], p["meta"]["chosen_sample"]),
                   (p["rejected_model"], p["meta"]["rejected_sample"])})
        for p in pairs
    }  # fmt: skip
    assert len(unordered) == eligible


def test_margin_is_strict():
    # A gap of exactly the margin is not enough.
    pairs, reason = pairs_of(make_row([3.0, 5.0]), "random_with_margin")
    assert pairs == [] and reason == "margin_below_threshold"
    pairs, reason = pairs_of(make_row([3.0, 5.0]), "all_pairs", min_margin=2.0)
    assert pairs == [] and reason == "margin_below_threshold"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ties_never_pair_even_with_negative_margin(strategy):
    row = make_row([7.0, 7.0, 3.0])
    pairs, _ = pairs_of(row, strategy, min_margin=-5.0, max_pairs_per_prompt=10)
    assert pairs, "7 over 3 is a strict preference: every strategy pairs it"
    assert all(p["margin"] > 0 for p in pairs)


@pytest.mark.parametrize("strategy", ["best_vs_random", "random_with_margin"])
def test_random_strategies_are_deterministic_and_seed_sensitive(strategy):
    row = make_row([float(i) for i in range(1, 13)])
    kwargs = {"min_margin": 0.5, "max_pairs_per_prompt": 3}
    runs = {s: pairs_of(row, strategy, seed=s, **kwargs)[0] for s in range(8)}
    assert pairs_of(row, strategy, seed=3, **kwargs)[0] == runs[3]
    assert len({tuple(p["id"] for p in r) for r in runs.values()}) > 1
    # Row id also seeds the RNG, so prompts do not all get the same draw.
    other = pairs_of(make_row([float(i) for i in range(1, 13)], row_id="p-other"), strategy,
                        seed=3, **kwargs)[0]  # fmt: skip
    assert [p["margin"] for p in other] != [] and other != runs[3]


def test_response_order_does_not_matter():
    row = make_row([float(i) for i in range(1, 9)])
    shuffled = dict(row, responses=list(reversed(row["responses"])))
    for strategy in STRATEGIES:
        assert pairs_of(row, strategy, seed=1) == pairs_of(shuffled, strategy, seed=1)


def test_unscorable_responses_excluded():
    row = make_row([9.0, 1.0, 5.0, 8.0], texts=["good", "   ", "ok", "fine"])
    row["responses"][3]["overall"] = None
    pairs, _ = pairs_of(row, "all_pairs")
    texts = {p["chosen"][0]["content"] for p in pairs} | {
        p["rejected"][0]["content"] for p in pairs
    }
    assert texts == {"good", "ok"}
    assert len(pairs) == 1 and pairs[0]["rejected_score"] == 5.0


def test_min_chosen_score_filters():
    row = make_row([9.0, 6.0, 1.0])
    pairs, _ = pairs_of(row, "all_pairs", min_chosen_score=7.0)
    assert pairs and all(p["chosen_score"] >= 7.0 for p in pairs)
    assert len(pairs) == 2


@pytest.mark.parametrize(
    ("scores", "kwargs", "reason"),
    [
        ([], {}, "fewer_than_two_scored_responses"),
        ([5.0], {}, "fewer_than_two_scored_responses"),
        ([5.0, None], {}, "fewer_than_two_scored_responses"),
        ([6.0, 6.0, 6.0], {}, "all_tied"),
        ([6.0, 7.0], {"min_margin": 1.5}, "margin_below_threshold"),
        ([2.0, 5.0], {"min_chosen_score": 6.0}, "chosen_below_min_score"),
    ],
)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_no_pair_reason_reachable(strategy, scores, kwargs, reason):
    pairs, got = pairs_of(make_row(scores), strategy, **kwargs)
    assert pairs == [] and got == reason and got in NO_PAIR_REASONS


def test_unknown_strategy_and_bad_cap():
    with pytest.raises(ValueError) as exc:
        pairs_of(make_row([1.0, 9.0]), "best_of_n")
    assert "best_of_n" in str(exc.value) and all(s in str(exc.value) for s in STRATEGIES)
    with pytest.raises(ValueError, match="max_pairs_per_prompt"):
        pairs_of(make_row([1.0, 9.0]), "all_pairs", max_pairs_per_prompt=0)


# --------------------------------------------------------------------------- curation


def test_new_columns_filled_for_a_single_judge_pair():
    (pair,), _ = pairs_of(make_row([2.0, 9.0]), "best_vs_worst")
    assert pair["chosen_scores"] == {"coig_p": 9.0} and pair["rejected_scores"] == {"coig_p": 2.0}
    assert pair["strength"] == 3 and pair["label_source"] == "judge"
    assert pair["judge_agreement"] == 1.0
    assert pair["routing_score"] == 0.0  # one judge, margin 7: nothing calls for a human


@pytest.mark.parametrize(
    ("margin", "strength"),
    [(0.0, 0), (0.3, 1), (2.0, 1), (2.01, 2), (4.0, 2), (4.5, 3), (9.0, 3), (-1.0, -1), (-5, -3)],
)
def test_preference_strength_bins(margin, strength):
    assert preference_strength(margin) == strength


def test_judge_votes_groups_aspects_and_counts_ties_half():
    chosen = {"a": 8.0, "b.help": 4.0, "b.correct": 4.0, "math": 1.0, "c": None}
    rejected = {"a": 3.0, "b.help": 5.0, "b.correct": 1.0, "math": 1.0, "d": 2.0}
    # a prefers chosen, b (mean 4.0 vs 3.0) prefers chosen, math ties; c and d scored one side.
    assert judge_votes(chosen, rejected) == (pytest.approx(2.5 / 3), 3)
    assert judge_votes({"a": 1.0}, {"b": 2.0}) == (None, 0)
    assert judge_votes({"a": 1.0, "b": 9.0}, {"a": 5.0, "b": 5.0}) == (0.5, 2)
    # An ensemble's aggregate must not vote beside its members.
    with_ensemble = ({"a": 9.0, "b": 2.0, "ens": 5.6}, {"a": 1.0, "b": 5.0, "ens": 3.0})
    assert judge_votes(*with_ensemble) == (pytest.approx(2 / 3), 3)
    assert judge_votes(*with_ensemble, exclude=("ens",)) == (0.5, 2)


def two_judge_row():
    # Response scores from two judges; overall is their mean. Responses 0/1 are a close call
    # the judges split on; response 2 is clearly worst for both.
    row = make_row([7.0, 6.0, 2.0], texts=["x" * 100, "y" * 100, "z" * 1000])
    judge_scores = [(9.0, 5.0), (5.0, 7.0), (2.0, 5.0)]
    for r, (a, b) in zip(row["responses"], judge_scores):
        r["scores"] = {"judge_a": a, "judge_b": b}
    return row


def test_min_judge_agreement_keeps_only_pairs_judges_share():
    row = two_judge_row()
    every, _ = pairs_of(row, "all_pairs")
    assert sorted(p["judge_agreement"] for p in every) == [0.5, 0.75, 1.0]
    kept, _ = pairs_of(row, "all_pairs", min_judge_agreement=1.0)
    assert [p["judge_agreement"] for p in kept] == [1.0]
    assert (kept[0]["chosen_score"], kept[0]["rejected_score"]) == (6.0, 2.0)
    pairs, reason = pairs_of(row, "best_vs_worst", min_judge_agreement=1.0)
    assert (pairs, reason) == ([], "judges_disagree")


def test_max_length_ratio_drops_lopsided_pairs_before_the_draw():
    row = two_judge_row()  # response 2 is 10x longer than the others
    pairs, _ = pairs_of(row, "all_pairs", max_length_ratio=3.0)
    assert [(p["chosen_score"], p["rejected_score"]) for p in pairs] == [(7.0, 6.0)]
    pairs, reason = pairs_of(row, "best_vs_worst", max_length_ratio=3.0)
    assert (pairs, reason) == ([], "length_ratio_above_max")
    # best_vs_random draws only among pairs that pass, so it always finds the valid one.
    for seed in range(10):
        (pair,), _ = pairs_of(row, "best_vs_random", max_length_ratio=3.0, seed=seed)
        assert pair["rejected_score"] == 6.0
    assert length_ratio("ab", "abcdef") == 3.0 and length_ratio("", "a") == math.inf


def test_new_filters_off_by_default_change_nothing():
    row = two_judge_row()
    for strategy in STRATEGIES:
        base = pairs_of(row, strategy, seed=2)
        assert (
            pairs_of(row, strategy, seed=2, max_length_ratio=1e9, min_judge_agreement=0.0) == base
        )


def test_routing_score_signals():
    assert routing_score(6.0, 1.0, 2) == 0.0
    assert routing_score(0.0, 1.0, 1) == 1.0  # a tie is a coin flip
    assert routing_score(6.0, 0.5, 2) == 1.0  # judges split evenly
    assert routing_score(6.0, 0.5, 1) == 0.0  # one judge cannot disagree with itself
    assert routing_score(6.0, 1.0, 2, rm_margin=0.0) == 1.0  # the reward model is unsure
    assert routing_score(6.0, 1.0, 2, rm_margin=-3.0) == 1.0  # ... or prefers rejected
    assert routing_score(6.0, 1.0, 2, rm_margin=8.0) < 0.01
    close, split = routing_score(1.0, 1.0, 2), routing_score(6.0, 0.75, 2)
    assert 0 < close < 1 and 0 < split < 1
    assert routing_score(1.0, 0.75, 2) > max(close, split)  # signals add up (noisy-OR)
    # In pairs: the judges' split pair outranks the pair they agree on.
    pairs, _ = pairs_of(two_judge_row(), "all_pairs")
    by_agreement = {p["judge_agreement"]: p["routing_score"] for p in pairs}
    assert by_agreement[0.5] == 1.0 and by_agreement[1.0] < by_agreement[0.75] < 1.0


def test_passes_rm_agreement():
    assert passes_rm_agreement(None) and passes_rm_agreement(0.5)
    assert not passes_rm_agreement(0.0) and not passes_rm_agreement(-1.0)
    assert not passes_rm_agreement(0.5, min_rm_margin=1.0)
    assert not passes_rm_agreement(-0.5, min_rm_margin=-2.0)


def test_bad_curation_knobs_raise():
    with pytest.raises(ValueError, match="max_length_ratio"):
        pairs_of(make_row([1.0, 9.0]), "all_pairs", max_length_ratio=0.5)
    with pytest.raises(ValueError, match="min_judge_agreement"):
        pairs_of(make_row([1.0, 9.0]), "all_pairs", min_judge_agreement=2.0)


def test_pairs_fit_the_pair_schema_old_and_new():
    import json

    pairs, _ = pairs_of(two_judge_row(), "all_pairs")
    in_flight = json.loads(json.dumps(pairs))  # rows carry pairs as JSON between stages
    legacy = {k: v for k, v in in_flight[0].items() if k in PAIR_KEYS - {"chosen_scores",
              "rejected_scores", "strength", "judge_agreement", "routing_score", "label_source"}}  # fmt: skip
    records = [{**p, "meta": json.dumps(p["meta"])} for p in [*in_flight, legacy]]
    table = pairs_table(records)
    assert table.column("strength").to_pylist()[:-1] == [p["strength"] for p in pairs]
    assert score_dict(table.column("chosen_scores").to_pylist()[0]) == pairs[0]["chosen_scores"]
    assert table.column("label_source").to_pylist() == ["judge"] * len(pairs) + [None]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("pairing.max_length_ratio=0.5", "pairing.max_length_ratio"),
        ("pairing.min_judge_agreement=1.5", "pairing.min_judge_agreement"),
        ("pairing.domain_quotas.math=-1", "pairing.domain_quotas.math"),
    ],
)
def test_config_validates_curation_knobs(override, key):
    from conftest import QUICKSTART

    from prefgen.config import ConfigError
    from prefgen.run.registry import load_pipeline

    ok = load_pipeline(QUICKSTART, ["pairing.max_length_ratio=3", "pairing.domain_quotas.math=40"])
    assert ok.pairing.max_length_ratio == 3.0 and ok.pairing.domain_quotas == {"math": 40}
    with pytest.raises(ConfigError, match=key):
        load_pipeline(QUICKSTART, [override])
