"""What every judge kind shares: which responses to judge, self-exclusion, retries, recording.

The kinds (``pointwise``, ``pairwise``, ``listwise``, ``cdr``) differ in how they ask and
what they parse; they agree on which responses are judged, on how a judge avoids its own
model's outputs, on how an unparseable reply is re-asked, and on how a result lands in a
response (`scores`, `rationales`, `judge_status`) and in the row (`judge_records`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefgen.config import LLMJudgeConfig
from prefgen.data.rows import is_ok, stable_seed
from prefgen.engines import GenerationRequest

# rubric_for lives with the custom-rubric definitions it reads; the kinds import it from here.
from prefgen.judges.custom_rubrics import rubric_for

__all__ = [
    "SKIPPED_SELF",
    "call_in_chunks",
    "generate_until_parsed",
    "is_self_judged",
    "judge_targets",
    "question_text",
    "record",
    "row_judge_record",
    "rubric_for",
    "split_self_judged",
    "targets_by_row",
]

SKIPPED_SELF = "skipped_self"


def judge_targets(rows: list[dict]) -> list[tuple[int, int]]:
    """(row, response) positions worth judging: ok rows the reward model did not settle
    (`prefgen.judges.route`), responses with text."""
    return [
        (i, j)
        for i, row in enumerate(rows)
        if is_ok(row) and row.get("route") != "reward_model"
        for j, response in enumerate(row["responses"])
        if response["text"].strip() and not response["finish_reason"].startswith("error")
    ]


def question_text(messages: list[dict]) -> str:
    """The conversation as the judge sees it: the last user turn, with earlier turns as context."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages if m["role"] != "system")


def is_self_judged(generator: str, judge: LLMJudgeConfig) -> bool:
    """True when `exclude_self` is on and the response came from this judge's own weights."""
    if not judge.exclude_self:
        return False
    own = {judge.model.name, *judge.same_as}
    if judge.kind == "cdr" and judge.weak_model is not None:
        own.add(judge.weak_model.name)
    return generator in own


def split_self_judged(
    rows: list[dict],
    targets: list[tuple[int, int]],
    judge: LLMJudgeConfig,
    score_names: Sequence[str],
) -> list[tuple[int, int]]:
    """Mark self-judged responses `skipped_self` (no score) and return the remaining targets.

    Self-preference is a documented judge bias (docs/research.md "Judge biases and their controls"): a judge that shares
    weights with a generator must not score that generator's outputs.
    """
    kept = []
    for i, j in targets:
        response = rows[i]["responses"][j]
        if is_self_judged(response["model"], judge):
            for name in score_names:
                response["judge_status"][name] = SKIPPED_SELF
        else:
            kept.append((i, j))
    return kept


def call_in_chunks(fn: Callable[[list], list], items: list, size: int) -> list:
    """`fn` over `items` in chunks of at most `size`, results concatenated in order.

    Judge kinds fan one prompt out into many conversations (pairwise: two per response
    pair); chunking by the model's batch size bounds the engine's memory per call.
    """
    out: list = []
    step = max(1, int(size))
    for start in range(0, len(items), step):
        out.extend(fn(items[start : start + step]))
    return out


def generate_until_parsed(
    engine,
    convs: list[list[dict]],
    parse: Callable[[int, str], Any],
    judge: LLMJudgeConfig,
    seed_keys: list[tuple],
) -> tuple[list[Any], list[str | None]]:
    """Ask, parse, re-ask the unparsed with a fresh seed, up to `judge.max_retries` times.

    `parse(k, reply)` returns a value or None; None means "ask conversation k again".
    The first try is greedy, retries sample (temperature 0.7) so they can differ.
    """
    parsed: list[Any] = [None] * len(convs)
    replies: list[str | None] = [None] * len(convs)
    pending = list(range(len(convs)))
    for attempt in range(judge.max_retries + 1):
        if not pending:
            break
        requests = [
            GenerationRequest(
                convs[k],
                judge.max_tokens,
                temperature=0.0 if attempt == 0 else 0.7,
                top_p=0.95,
                seed=stable_seed(*seed_keys[k], judge.name, attempt),
            )
            for k in pending
        ]
        outs = call_in_chunks(engine.generate, requests, judge.model.batch_size)
        still = []
        for k, out in zip(pending, outs):
            replies[k] = out.text
            parsed[k] = parse(k, out.text)
            if parsed[k] is None:
                still.append(k)
        pending = still
    return parsed, replies


def record(
    response: dict,
    name: str,
    score: float | None,
    status: str | None = None,
    rationale: str | None = None,
) -> None:
    """Write one judge result into a response; status defaults to ok / no_score."""
    response["scores"][name] = score
    if rationale is not None:
        response["rationales"][name] = rationale
    response["judge_status"][name] = status or ("ok" if score is not None else "no_score")


def targets_by_row(targets: list[tuple[int, int]]) -> dict[int, list[int]]:
    """(row, response) targets -> each row's target responses, in order: the judges that
    compare a row's responses with each other (pairwise, listwise) ask per row."""
    per_row: dict[int, list[int]] = {}
    for i, j in targets:
        per_row.setdefault(i, []).append(j)
    return per_row


def row_judge_record(row: dict, judge_name: str, kind: str) -> dict:
    """The row-level record of one judge (a `judge_records` entry), created on first use.

    It travels into every pair's `meta.prompt_meta.judges`, so comparisons and shuffles stay
    auditable next to the pairs they produced.
    """
    for record in row["judge_records"]:
        if record["name"] == judge_name:
            return record
    record = {"name": judge_name, "kind": kind}
    row["judge_records"].append(record)
    return record
