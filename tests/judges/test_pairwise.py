"""Pairwise judging: pure rendering, parsing, planning and combining; then the real model."""

from __future__ import annotations

import pytest
from judges.judge_rows import math_row

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.judges.pairwise import (
    VERDICT_PREFIX,
    combine_orders,
    comparison_plan,
    judge_pairwise,
    mean_win_rates,
    parse_verdict,
    render_pairwise_messages,
)
from prefgen.judges.shared import judge_targets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A is clearer.\nVerdict: [[A]]", "A"),
        ("Verdict: [[ B ]]", "B"),
        ("First I thought [[A]], but on reflection [[B]]", "B"),
        ("**Verdict:** B", "B"),
        ("verdict: a", "A"),
        ("Both are fine.", None),
        ("Response A has 3 steps; [[C]]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_render_shows_both_responses_verbatim_and_the_verdict_form():
    a, b = "def f():\n    return {'x': 1}\n\n\n\nf()", "RESPONSE-B {y}"
    msgs = render_pairwise_messages("Q {z}?", a, b, "Criteria: correctness.", "12")
    user = msgs[1]["content"]
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert a in user and b in user and "Q {z}?" in user
    assert user.index("[Response A]") < user.index(a) < user.index("[Response B]") < user.index(b)
    assert "Verdict: [[A]]" in user and "Criteria: correctness." in user and "12" in user
    assert VERDICT_PREFIX == "Verdict: [["


def test_comparison_plan_all_pairs_or_a_seeded_cap_covering_everyone():
    assert comparison_plan(3, None, 0) == [(0, 1), (0, 2), (1, 2)]
    assert comparison_plan(1, None, 0) == []
    capped = comparison_plan(6, 6, seed=7)
    assert len(capped) == 6 and capped == comparison_plan(6, 6, seed=7)
    assert all(a < b for a, b in capped)
    assert {i for pair in capped for i in pair} == set(range(6))  # the ring reaches everyone
    assert len({tuple(comparison_plan(6, 6, seed=s)) for s in range(5)}) > 1  # seed matters


def test_combine_orders_cancels_position_bias_and_flags_consistency():
    # A judge that always prefers the first slot: verdicts flip with the order.
    biased = combine_orders(0, 1, ("A", 0.8), ("A", 0.8))
    assert biased["consistent"] is False
    assert biased["p_a_wins"] == pytest.approx(0.5) and biased["winner"] is None
    # Response 0 wins as A and again as B.
    clear = combine_orders(0, 1, (None, 0.9), (None, 0.2))
    assert clear["consistent"] is True and clear["winner"] == 0
    assert clear["ab"]["verdict"] == "A" and clear["ba"]["verdict"] == "B"
    assert clear["p_a_wins"] == pytest.approx((0.9 + 0.8) / 2)
    # Parsed verdicts without probabilities count as certain; an unparsed order is skipped.
    half = combine_orders(2, 5, ("B", None), (None, None))
    assert half["p_a_wins"] == 0.0 and half["winner"] == 5 and half["consistent"] is False
    assert combine_orders(0, 1, (None, None), (None, None))["p_a_wins"] is None


def test_mean_win_rates():
    comps = [
        {"a": 0, "b": 1, "p_a_wins": 1.0},
        {"a": 0, "b": 2, "p_a_wins": 0.5},
        {"a": 1, "b": 2, "p_a_wins": None},
    ]
    assert mean_win_rates([0, 1, 2, 3], comps) == {0: 0.75, 1: 0.0, 2: 0.5, 3: None}


def _judge(**kw) -> LLMJudgeConfig:
    return LLMJudgeConfig(
        name="pw", kind="pairwise", model=ModelConfig(name="judge", batch_size=4), **kw
    )


def test_stage_judges_every_pair_in_both_orders(engine):
    rows = [math_row()]
    judge_pairwise(rows, judge_targets(rows), _judge(), engine)
    record = next(r for r in rows[0]["judge_records"] if r["name"] == "pw")
    comparisons = record["comparisons"]
    assert {(c["a"], c["b"]) for c in comparisons} == {(0, 1), (0, 2), (1, 2)}
    for c in comparisons:
        for order in ("ab", "ba"):  # both orders asked, each with its own verdict
            assert c[order]["verdict"] in ("A", "B") and 0.0 <= c[order]["p_a"] <= 1.0
        # consistent: the same response wins in both orders (it is A in "ab" and B in "ba")
        assert c["consistent"] is (c["ab"]["verdict"] != c["ba"]["verdict"])
        assert c["p_a_wins"] == pytest.approx((c["ab"]["p_a"] + 1 - c["ba"]["p_a"]) / 2)
    assert record["consistent_share"] == pytest.approx(
        sum(c["consistent"] for c in comparisons) / 3
    )
    for j, response in enumerate(rows[0]["responses"]):
        assert 0.0 <= response["scores"]["pw"] <= 1.0 and response["judge_status"]["pw"] == "ok"
        mine = [
            line for line in response["rationales"]["pw"].splitlines() if line.startswith("vs #")
        ]
        others = sorted(int(line.split()[1].strip("#:")) for line in mine)
        assert others == sorted({0, 1, 2} - {j})  # one line per comparison it took part in
    # Win rates of a round robin average to one half.
    total = sum(r["scores"]["pw"] for r in rows[0]["responses"])
    assert total == pytest.approx(1.5)


def test_stage_caps_comparisons_and_reports_lonely_responses(engine):
    rows = [math_row(), math_row("p2", {"only": "12"})]
    judge_pairwise(rows, judge_targets(rows), _judge(max_comparisons=1), engine)
    assert len(next(r for r in rows[0]["judge_records"] if r["name"] == "pw")["comparisons"]) == 1
    unpaired = [r for r in rows[0]["responses"] if not r["rationales"]["pw"]]
    assert len(unpaired) == 1 and unpaired[0]["judge_status"]["pw"] == "no_comparison"
    lonely = rows[1]["responses"][0]
    assert lonely["scores"]["pw"] is None and lonely["judge_status"]["pw"] == "no_comparison"
