"""Pair construction: strategies, filters, determinism and the output schema."""

from __future__ import annotations

import itertools

import pytest

from prefgen.pairing import NO_PAIR_REASONS, STRATEGIES, build_pairs

PAIR_KEYS = {
    "id", "prompt_id", "prompt", "chosen", "rejected", "chosen_score", "rejected_score",
    "margin", "chosen_model", "rejected_model", "domain", "judge", "strategy", "meta",
}  # fmt: skip


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
    pairs, reason = build_pairs(make_row(SPREAD), strategy, min_margin=min_margin, judge="j")
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
    (pair,), _ = build_pairs(row, "best_vs_worst")
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
    (again,), _ = build_pairs(row, "all_pairs")
    assert again["id"] == pair["id"]


def test_best_vs_worst_picks_extremes():
    (pair,), _ = build_pairs(make_row([5.0, 1.0, 9.0, 3.0]), "best_vs_worst")
    assert (pair["chosen_score"], pair["rejected_score"]) == (9.0, 1.0)


def test_best_vs_random_rejects_only_strictly_lower():
    row = make_row([9.0, 9.0, 4.0, 3.0, 2.0])
    seen = set()
    for seed in range(40):
        (pair,), _ = build_pairs(row, "best_vs_random", seed=seed)
        assert pair["chosen_score"] == 9.0
        seen.add(pair["rejected_score"])
    assert seen == {4.0, 3.0, 2.0}  # random over all strictly lower, never the tied 9.0


def test_best_vs_random_respects_margin_when_drawing():
    row = make_row([9.0, 8.0, 3.0])
    for seed in range(20):
        (pair,), _ = build_pairs(row, "best_vs_random", min_margin=2.0, seed=seed)
        assert pair["rejected_score"] == 3.0


def test_all_pairs_counts_and_cap_keeps_largest_margins():
    row = make_row([1.0, 2.0, 3.0, 4.0, 4.0])
    pairs, _ = build_pairs(row, "all_pairs")
    assert len(pairs) == 9  # C(5,2)=10 minus the one tie
    capped, _ = build_pairs(row, "all_pairs", max_pairs_per_prompt=3)
    assert [p["margin"] for p in capped] == [3.0, 3.0, 2.0]


def test_random_with_margin_default_margin_and_cap():
    row = make_row([float(i) for i in range(1, 11)])
    pairs, _ = build_pairs(row, "random_with_margin")
    assert len(pairs) == 6  # default cap
    assert all(p["margin"] > 2.0 for p in pairs)
    pairs, _ = build_pairs(row, "random_with_margin", max_pairs_per_prompt=50)
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
    pairs, reason = build_pairs(make_row([3.0, 5.0]), "random_with_margin")
    assert pairs == [] and reason == "margin_below_threshold"
    pairs, reason = build_pairs(make_row([3.0, 5.0]), "all_pairs", min_margin=2.0)
    assert pairs == [] and reason == "margin_below_threshold"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ties_never_pair_even_with_negative_margin(strategy):
    row = make_row([7.0, 7.0, 3.0])
    pairs, _ = build_pairs(row, strategy, min_margin=-5.0, max_pairs_per_prompt=10)
    assert all(p["margin"] > 0 for p in pairs)


@pytest.mark.parametrize("strategy", ["best_vs_random", "random_with_margin"])
def test_random_strategies_are_deterministic_and_seed_sensitive(strategy):
    row = make_row([float(i) for i in range(1, 13)])
    kwargs = {"min_margin": 0.5, "max_pairs_per_prompt": 3}
    runs = {s: build_pairs(row, strategy, seed=s, **kwargs)[0] for s in range(8)}
    assert build_pairs(row, strategy, seed=3, **kwargs)[0] == runs[3]
    assert len({tuple(p["id"] for p in r) for r in runs.values()}) > 1
    # Row id also seeds the RNG, so prompts do not all get the same draw.
    other = build_pairs(make_row([float(i) for i in range(1, 13)], row_id="p-other"), strategy,
                        seed=3, **kwargs)[0]  # fmt: skip
    assert [p["margin"] for p in other] != [] and other != runs[3]


def test_response_order_does_not_matter():
    row = make_row([float(i) for i in range(1, 9)])
    shuffled = dict(row, responses=list(reversed(row["responses"])))
    for strategy in STRATEGIES:
        assert build_pairs(row, strategy, seed=1) == build_pairs(shuffled, strategy, seed=1)


def test_unscorable_responses_excluded():
    row = make_row([9.0, 1.0, 5.0, 8.0], texts=["good", "   ", "ok", "fine"])
    row["responses"][3]["overall"] = None
    pairs, _ = build_pairs(row, "all_pairs")
    texts = {p["chosen"][0]["content"] for p in pairs} | {
        p["rejected"][0]["content"] for p in pairs
    }
    assert texts == {"good", "ok"}
    assert len(pairs) == 1 and pairs[0]["rejected_score"] == 5.0


def test_min_chosen_score_filters():
    row = make_row([9.0, 6.0, 1.0])
    pairs, _ = build_pairs(row, "all_pairs", min_chosen_score=7.0)
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
    pairs, got = build_pairs(make_row(scores), strategy, **kwargs)
    assert pairs == [] and got == reason and got in NO_PAIR_REASONS


def test_unknown_strategy_and_bad_cap():
    with pytest.raises(ValueError) as exc:
        build_pairs(make_row([1.0, 9.0]), "best_of_n")
    assert "best_of_n" in str(exc.value) and all(s in str(exc.value) for s in STRATEGIES)
    with pytest.raises(ValueError, match="max_pairs_per_prompt"):
        build_pairs(make_row([1.0, 9.0]), "all_pairs", max_pairs_per_prompt=0)
