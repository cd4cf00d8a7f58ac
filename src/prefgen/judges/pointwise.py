"""Pointwise judging: each response scored on its own against a rubric, one call per aspect.

Modes (`judge.llm[].mode`):
* `probability`: the score is the probability-weighted mean over the score labels right after
  the rubric's answer prefix (e.g. "Score: ["). One forward pass per response; gives a usable,
  graded signal even from judges too small to write a well-formed verdict.
* `generate`: the judge writes its analysis and a score; the score is parsed; an unparseable
  reply is retried with a fresh sample, then recorded as `parse_failed` (never a crash).
* `both`: the parsed score when there is one, else the weighted one; the reply is the rationale.

The rubric is chosen per row (`rubric_by_domain`, else `rubric`); rendering and parsing are
the pure functions of `rubrics` and `parsing`.
"""

from __future__ import annotations

from collections import defaultdict

from prefgen.config import LLMJudgeConfig
from prefgen.judges.names import judge_score_names
from prefgen.judges.parsing import parse_rating, weighted_score
from prefgen.judges.rubrics import render_judge_messages, score_labels, score_prefix
from prefgen.judges.shared import (
    call_in_chunks,
    generate_until_parsed,
    question_text,
    record,
    rubric_for,
)

__all__ = ["judge_pointwise"]


def judge_pointwise(
    rows: list[dict],
    targets: list[tuple[int, int]],
    judge: LLMJudgeConfig,
    engine,
    weak_engine=None,  # cdr's; unused here, so every kind has one signature
) -> None:
    """Score every target response in place: `scores`, `rationales`, `judge_status`."""
    by_rubric: dict[str, list[tuple[int, int]]] = defaultdict(list)
    rubrics = {}
    for i, j in targets:
        rubric = rubric_for(judge, rows[i]["domain"])
        rubrics[rubric.name] = rubric
        by_rubric[rubric.name].append((i, j))
    for rubric_name, group in by_rubric.items():
        rubric = rubrics[rubric_name]
        names = judge_score_names(judge.name, rubric.aspects)
        for aspect, name in zip(rubric.aspects, names):
            convs = [
                render_judge_messages(
                    rubric,
                    aspect,
                    question_text(rows[i]["messages"]),
                    rows[i]["responses"][j]["text"],
                    rows[i]["domain"],
                    rows[i]["reference"],
                )
                for i, j in group
            ]
            weighted: list[float | None] = [None] * len(convs)
            if judge.mode in ("probability", "both"):
                prefix, labels = score_prefix(rubric), score_labels(rubric)
                probs = call_in_chunks(
                    lambda c, p=prefix, ls=labels: engine.label_probabilities(c, p, ls),
                    convs,
                    judge.model.batch_size,
                )
                weighted = [weighted_score(p) for p in probs]
            parsed: list[float | None] = [None] * len(convs)
            replies: list[str | None] = [None] * len(convs)
            if judge.mode in ("generate", "both"):
                parsed, replies = generate_until_parsed(
                    engine,
                    convs,
                    lambda _k, text, scale=rubric.scale: parse_rating(text, scale),
                    judge,
                    [(rows[i]["id"], j, aspect) for i, j in group],
                )
            for k, (i, j) in enumerate(group):
                score = parsed[k] if parsed[k] is not None else weighted[k]
                status = None
                if judge.mode == "generate" and parsed[k] is None:
                    status = f"parse_failed after {judge.max_retries + 1} tries"
                record(rows[i]["responses"][j], name, score, status, replies[k])
