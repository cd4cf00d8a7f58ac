"""Pairwise judging: which of two responses is better, asked in both orders.

Judges favour whichever response comes first (or second); asking A/B and then B/A and
averaging cancels that position bias, and the two verdicts agreeing (`consistent`) is a
cheap confidence signal (docs/research.md "Judge biases and their controls"). For every compared pair:

* `probability` mode: P("A") vs P("B") right after "Verdict: [[" (one forward pass per order);
* `generate` mode: the judge writes a comparison ending in "Verdict: [[A]]" or "[[B]]",
  re-asked when unparseable; `both`: the parsed verdict, else the probabilities.

Each response's score is its mean win probability over its comparisons (0-1; a response that
wins every comparison in both orders scores 1). Every comparison is recorded in
the row's `judge_records` (`comparisons`) (response indices, both orders' verdicts,
`consistent`), and each response's `rationales[name]` lists its own comparisons and the judge's replies.
"""

from __future__ import annotations

import random
import re
from itertools import combinations

from prefgen.config import LLMJudgeConfig
from prefgen.data.rows import stable_seed
from prefgen.judges.rubrics import fill_template, reference_block, rubric_criteria
from prefgen.judges.shared import (
    call_in_chunks,
    generate_until_parsed,
    question_text,
    record,
    row_judge_record,
    rubric_for,
    targets_by_row,
)

__all__ = [
    "LABELS",
    "VERDICT_PREFIX",
    "combine_orders",
    "comparison_plan",
    "judge_pairwise",
    "mean_win_rates",
    "parse_verdict",
    "render_pairwise_messages",
]

LABELS = ("A", "B")
VERDICT_PREFIX = "Verdict: [["

_SYSTEM = "You are a strict, fair judge comparing two AI assistant responses."

_TEMPLATE = """\
Compare two responses to the same question and decide which one is better.
{criteria}
{reference_block}
[Question]
{question}

[Response A]
{response_a}

[Response B]
{response_b}

Ignore the order of the responses and their length. Write a short comparison (2-3 \
sentences). Then end with one final line in exactly this form: Verdict: [[A]] if Response A \
is better, or Verdict: [[B]] if Response B is better."""

# "[[A]]", "[[ B ]]", "Verdict: A", "Response B is better" (the last is a weaker fallback).
_BRACKET_RE = re.compile(r"\[\[\s*([AB])\s*\]\]")
_VERDICT_RE = re.compile(r"\bverdict\s*:?\s*\**\s*\[?\s*([AB])\b", re.IGNORECASE)


def render_pairwise_messages(
    question: str, response_a: str, response_b: str, criteria: str, reference: str | None
) -> list[dict]:
    """System + user messages asking which of two responses is better."""
    user = fill_template(
        _TEMPLATE,
        {"question": question, "response_a": response_a, "response_b": response_b},
        criteria=criteria,
        reference_block=reference_block(reference),
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """ "A" or "B" from the judge's reply (its last explicit verdict), else None."""
    if not isinstance(text, str):
        return None
    found = _BRACKET_RE.findall(text) or _VERDICT_RE.findall(text)
    return found[-1].upper() if found else None


def comparison_plan(n: int, max_comparisons: int | None, seed: int) -> list[tuple[int, int]]:
    """Which pairs (i < j) of `n` responses to compare, deterministic for a seed.

    All pairs when uncapped. Capped, a ring over a seeded order of the responses comes
    first, so every response takes part in a comparison before any pair is added twice.
    """
    every = list(combinations(range(n), 2))
    if max_comparisons is None or len(every) <= max_comparisons:
        return every
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    ring = [tuple(sorted((order[k], order[(k + 1) % n]))) for k in range(n)] if n > 2 else []
    rest = [p for p in every if p not in ring]
    rng.shuffle(rest)
    plan = list(dict.fromkeys(ring)) + rest
    return sorted(plan[:max_comparisons])


def _order_result(verdict: str | None, p_a: float | None) -> dict:
    """One order's outcome: the verdict, and P(the response shown as A wins)."""
    if verdict is None and p_a is not None:
        verdict = "A" if p_a > 0.5 else "B" if p_a < 0.5 else None
    if verdict is not None and p_a is None:
        p_a = 1.0 if verdict == "A" else 0.0
    return {"verdict": verdict, "p_a": p_a}


def combine_orders(
    first: int,
    second: int,
    ab: tuple[str | None, float | None],
    ba: tuple[str | None, float | None],
) -> dict:
    """One comparison record from both orders.

    `ab` is (verdict, P("A")) with `first` shown as A; `ba` the same with `second` shown
    as A. `p_first_wins` averages the orders, so position bias cancels; `consistent` is
    True when both orders name the same winner.
    """
    order_ab, order_ba = _order_result(*ab), _order_result(*ba)
    wins = []
    if order_ab["p_a"] is not None:
        wins.append(order_ab["p_a"])
    if order_ba["p_a"] is not None:
        wins.append(1.0 - order_ba["p_a"])
    p_first = sum(wins) / len(wins) if wins else None
    winner_ab = {"A": first, "B": second}.get(order_ab["verdict"])
    winner_ba = {"A": second, "B": first}.get(order_ba["verdict"])
    winner = None
    if p_first is not None and p_first != 0.5:
        winner = first if p_first > 0.5 else second
    return {
        "a": first,
        "b": second,
        "ab": order_ab,
        "ba": order_ba,
        "p_a_wins": p_first,
        "winner": winner,
        "consistent": winner_ab is not None and winner_ab == winner_ba,
    }


def mean_win_rates(indices: list[int], comparisons: list[dict]) -> dict[int, float | None]:
    """Each response's mean win probability over the comparisons it took part in."""
    acc: dict[int, list[float]] = {i: [] for i in indices}
    for c in comparisons:
        if c["p_a_wins"] is None:
            continue
        acc[c["a"]].append(c["p_a_wins"])
        acc[c["b"]].append(1.0 - c["p_a_wins"])
    return {i: (sum(v) / len(v) if v else None) for i, v in acc.items()}


def judge_pairwise(
    rows: list[dict],
    targets: list[tuple[int, int]],
    judge: LLMJudgeConfig,
    engine,
    weak_engine=None,  # cdr's; unused here, so every kind has one signature
) -> None:
    """Compare target responses of each row in both orders; record win rates and comparisons."""
    per_row = targets_by_row(targets)
    # One conversation per (row, pair, order); order 0 shows the lower index as A.
    asks: list[tuple[int, int, int, int]] = []  # (row, first, second, order)
    convs: list[list[dict]] = []
    for i, idx in per_row.items():
        row = rows[i]
        criteria = rubric_criteria(rubric_for(judge, row["domain"]), None, row["domain"])
        question = question_text(row["messages"])
        plan = comparison_plan(len(idx), judge.max_comparisons, _seed(row, judge))
        for a, b in plan:
            first, second = idx[a], idx[b]
            for order, (x, y) in enumerate(((first, second), (second, first))):
                texts = (row["responses"][x]["text"], row["responses"][y]["text"])
                asks.append((i, first, second, order))
                convs.append(render_pairwise_messages(question, *texts, criteria, row["reference"]))
    p_a: list[float | None] = [None] * len(convs)
    if convs and judge.mode in ("probability", "both"):
        probs = call_in_chunks(
            lambda c: engine.label_probabilities(c, VERDICT_PREFIX, list(LABELS)),
            convs,
            judge.model.batch_size,
        )
        p_a = [_p_first_label(p) for p in probs]
    verdicts: list[str | None] = [None] * len(convs)
    replies: list[str | None] = [None] * len(convs)
    if convs and judge.mode in ("generate", "both"):
        verdicts, replies = generate_until_parsed(
            engine,
            convs,
            lambda _k, text: parse_verdict(text),
            judge,
            [(rows[i]["id"], f, s, o) for i, f, s, o in asks],
        )
        # A parsed verdict decides its order; the probabilities only fill in for failures.
        p_a = [None if v is not None else p for v, p in zip(verdicts, p_a)]
    # row -> (first, second) -> order -> (verdict, P("A"), reply)
    results: dict[int, dict[tuple[int, int], dict[int, tuple]]] = {}
    for k, (i, first, second, order) in enumerate(asks):
        pair = results.setdefault(i, {}).setdefault((first, second), {})
        pair[order] = (verdicts[k], p_a[k], replies[k])
    for i, idx in per_row.items():
        comparisons, pair_replies = [], {}
        for (first, second), orders in results.get(i, {}).items():
            comparisons.append(combine_orders(first, second, orders[0][:2], orders[1][:2]))
            pair_replies[(first, second)] = (orders[0][2], orders[1][2])
        _record_row(rows[i], idx, comparisons, pair_replies, judge)


def _record_row(
    row: dict,
    idx: list[int],
    comparisons: list[dict],
    pair_replies: dict[tuple[int, int], tuple[str | None, str | None]],
    judge: LLMJudgeConfig,
) -> None:
    """Scores and per-response comparisons (with the judge's replies) plus the row record."""
    rates = mean_win_rates(idx, comparisons)
    for j in idx:
        mine = []
        for c in comparisons:
            if j not in (c["a"], c["b"]):
                continue
            entry = {**c, "ab": dict(c["ab"]), "ba": dict(c["ba"])}
            for key, reply in zip(("ab", "ba"), pair_replies.get((c["a"], c["b"]), ())):
                if reply is not None:
                    entry[key]["reply"] = reply
            mine.append(entry)
        status = None
        if not mine:
            status = "no_comparison"
        elif rates[j] is None:
            status = f"parse_failed after {judge.max_retries + 1} tries"
        record(row["responses"][j], judge.name, rates[j], status, comparison_text(j, mine))
    consistent = [c["consistent"] for c in comparisons]
    row_judge_record(row, judge.name, "pairwise").update(
        comparisons=comparisons,
        consistent_share=(sum(consistent) / len(consistent)) if consistent else None,
    )


def comparison_text(j: int, comparisons: list[dict]) -> str:
    """A response's comparisons as readable lines (its rationale), with the judge's replies:

    vs #2: wins with p=0.71 (shown first: A p=0.80, shown second: B p=0.38), consistent
    """
    lines = []
    for c in comparisons:
        other, first = (c["b"], True) if c["a"] == j else (c["a"], False)
        p_mine = c["p_a_wins"] if first else (None if c["p_a_wins"] is None else 1 - c["p_a_wins"])
        outcome = (
            "no verdict"
            if p_mine is None
            else ("wins" if p_mine > 0.5 else "loses" if p_mine < 0.5 else "ties")
        )
        orders = []
        for key, label in (("ab", "A/B"), ("ba", "B/A")):
            o = c[key]
            p_a = "-" if o.get("p_a") is None else f"{o['p_a']:.2f}"
            orders.append(f"{label}: {o.get('verdict') or '-'} p_a={p_a}")
        shown = "-" if p_mine is None else f"{p_mine:.2f}"
        tail = ", consistent" if c["consistent"] else ""
        lines.append(f"vs #{other}: {outcome} p={shown} ({'; '.join(orders)}){tail}")
        for key, label in (("ab", "A/B"), ("ba", "B/A")):
            reply = c[key].get("reply")
            if reply:
                lines.append(f"  reply {label}: {reply}")
    return "\n".join(lines)


def _p_first_label(probs: dict[str, float]) -> float | None:
    total = probs.get("A", 0.0) + probs.get("B", 0.0)
    return probs.get("A", 0.0) / total if total > 0 else None


def _seed(row: dict, judge: LLMJudgeConfig) -> int:
    return stable_seed(row["id"], judge.name, judge.seed, "pairwise")
