"""Listwise judging: all of a prompt's responses rated in one call, in a shuffled order.

UltraFeedback rates its four completions in one GPT-4 call after shuffling them (docs/research.md
"UltraFeedback: ratings, critique and pairs"): the judge sees the responses side by side, and the shuffle keeps any position
bias from always favouring the same generator. The shuffle is seeded per (prompt, judge,
seed), so a rerun shows the same order; the permutation is recorded in
the row's `judge_records` (`permutation`) (original response index at each shown position).

* `probability` mode: for shown position k, the score-label distribution right after
  "Response k: [" (the first line of the requested answer block for that response);
* `generate` mode: the judge writes one line per response, "Response k: [n]"; a reply that
  gives a ranking instead ("Ranking: 2 > 1 > 3") is mapped onto the scale; re-asked when
  neither parses; `both`: parsed when complete, else the probabilities.

Scores are mapped back to the original response order before they are recorded.
"""

from __future__ import annotations

import random
import re

from prefgen.config import LLMJudgeConfig
from prefgen.data.rows import stable_seed
from prefgen.judges.names import judge_score_names
from prefgen.judges.parsing import weighted_score
from prefgen.judges.rubrics import (
    Rubric,
    fill_template,
    reference_block,
    rubric_criteria,
    score_labels,
)
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
    "item_prefix",
    "judge_listwise",
    "parse_listwise",
    "ranking_to_scores",
    "render_listwise_messages",
    "shuffle_order",
    "unshuffle",
]

_TEMPLATE = """\
Rate each of the {count} responses to the question on a scale of {low} to {high}. Judge each \
on its own merits; their order means nothing.
{criteria}
{reference_block}
[Question]
{question}

{responses}

Write one short sentence about each response. Then end with one line per response, in \
order, in exactly this form:
{answer_lines}
where n is a whole number from {low} to {high}."""

_NUM = r"-?\d+(?:\.\d+)?"
_RANKING_RE = re.compile(r"ranking\s*:?\s*\[*\s*((?:\d+\s*(?:>|,|\s)\s*)+\d+)", re.IGNORECASE)


def item_prefix(position: int) -> str:
    """The answer line's text up to the score digits for shown position `position` (1-based)."""
    return f"Response {position}: ["


def shuffle_order(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n): `order[k]` is the item shown at position k + 1."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def unshuffle(shown_values: list, order: list[int]) -> list:
    """Values listed by shown position, returned in the items' original order."""
    out = [None] * len(order)
    for position, original in enumerate(order):
        out[original] = shown_values[position]
    return out


def render_listwise_messages(
    rubric: Rubric,
    aspect: str,
    question: str,
    shown_responses: list[str],
    domain: str | None,
    reference: str | None,
) -> list[dict]:
    """System + user messages asking for one `aspect` score per response, in shown order."""
    low, high = rubric.scale
    blocks = {f"response_{k}": text for k, text in enumerate(shown_responses, start=1)}
    # The response blocks are user content: placeholders here, inserted verbatim at the end.
    layout = "\n\n".join(f"[Response {k}]\n{{response_{k}}}" for k in range(1, len(blocks) + 1))
    lines = "\n".join(f"{item_prefix(k)}n]" for k in range(1, len(blocks) + 1))
    template = _TEMPLATE.replace("{responses}", layout)
    user = fill_template(
        template,
        {"question": question, **blocks},
        count=len(blocks),
        low=low,
        high=high,
        criteria=rubric_criteria(rubric, aspect, domain),
        reference_block=reference_block(reference),
        answer_lines=lines,
    )
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]


def ranking_to_scores(ranking: list[int], n: int, scale: tuple[int, int]) -> list[float | None]:
    """A best-first ranking of shown positions (1-based) spread evenly over the scale."""
    low, high = scale
    scores: list[float | None] = [None] * n
    ranked = [p for p in dict.fromkeys(ranking) if 1 <= p <= n]
    if len(ranked) == 1:
        scores[ranked[0] - 1] = float(high)
    for rank, position in enumerate(ranked):
        if len(ranked) > 1:
            scores[position - 1] = high - rank * (high - low) / (len(ranked) - 1)
    return scores


def parse_listwise(text: str, n: int, scale: tuple[int, int]) -> list[float] | None:
    """One score per shown position from "Response k: [n]" lines, else from a ranking.

    None unless every position gets a score: a partial answer is re-asked, not guessed.
    """
    if not isinstance(text, str) or n < 1:
        return None
    low, high = scale
    scores: list[float | None] = [None] * n
    for k in range(1, n + 1):
        found = re.findall(rf"response\s*{k}(?!\d)\s*:?\s*\**\s*\[*\s*({_NUM})\s*\]*", text, re.I)
        for value in reversed(found):  # the answer block comes last
            if low <= float(value) <= high:
                scores[k - 1] = float(value)
                break
    if all(s is not None for s in scores):
        return scores  # type: ignore[return-value]
    match = _RANKING_RE.search(text)
    if match:
        ranked = ranking_to_scores([int(x) for x in re.findall(r"\d+", match.group(1))], n, scale)
        if all(s is not None for s in ranked):
            return ranked  # type: ignore[return-value]
    return None


def judge_listwise(
    rows: list[dict],
    targets: list[tuple[int, int]],
    judge: LLMJudgeConfig,
    engine,
    weak_engine=None,  # cdr's; unused here, so every kind has one signature
) -> None:
    """Rate each row's target responses together, per aspect; record scores and the shuffle."""
    per_row = targets_by_row(targets)
    # (row, rubric, aspect, score name, shown response indices)
    asks: list[tuple[int, Rubric, str, str, list[int]]] = []
    convs: list[list[dict]] = []
    for i, idx in per_row.items():
        row = rows[i]
        rubric = rubric_for(judge, row["domain"])
        order = shuffle_order(len(idx), stable_seed(row["id"], judge.name, judge.seed, "list"))
        shown = [idx[k] for k in order]
        row_judge_record(row, judge.name, "listwise")["permutation"] = shown
        for aspect, name in zip(rubric.aspects, judge_score_names(judge.name, rubric.aspects)):
            asks.append((i, rubric, aspect, name, shown))
            convs.append(
                render_listwise_messages(
                    rubric,
                    aspect,
                    question_text(row["messages"]),
                    [row["responses"][j]["text"] for j in shown],
                    row["domain"],
                    row["reference"],
                )
            )
    weighted: list[list[float | None]] = [[None] * len(a[4]) for a in asks]
    if convs and judge.mode in ("probability", "both"):
        weighted = _probability_scores(asks, convs, judge, engine)
    parsed: list[list[float] | None] = [None] * len(convs)
    replies: list[str | None] = [None] * len(convs)
    if convs and judge.mode in ("generate", "both"):
        parsed, replies = generate_until_parsed(
            engine,
            convs,
            lambda k, text: parse_listwise(text, len(asks[k][4]), asks[k][1].scale),
            judge,
            [(rows[a[0]]["id"], a[2], "list") for a in asks],
        )
    for k, (i, _rubric, _aspect, name, shown) in enumerate(asks):
        scores = parsed[k] if parsed[k] is not None else weighted[k]
        status = None
        if judge.mode == "generate" and parsed[k] is None:
            status = f"parse_failed after {judge.max_retries + 1} tries"
        for position, j in enumerate(shown):
            record(rows[i]["responses"][j], name, scores[position], status, replies[k])


def _probability_scores(asks, convs, judge: LLMJudgeConfig, engine) -> list[list[float | None]]:
    """Weighted score per shown position: one label-probability pass per position."""
    out: list[list[float | None]] = [[None] * len(a[4]) for a in asks]
    for position in range(max(len(a[4]) for a in asks)):
        # Rubrics of one judge share a scale, so one label set serves every conversation.
        ks = [k for k, a in enumerate(asks) if len(a[4]) > position]
        labels = score_labels(asks[ks[0]][1])
        probs = call_in_chunks(
            lambda c, p=item_prefix(position + 1), ls=labels: engine.label_probabilities(c, p, ls),
            [convs[k] for k in ks],
            judge.model.batch_size,
        )
        for k, p in zip(ks, probs):
            out[k][position] = weighted_score(p)
    return out
