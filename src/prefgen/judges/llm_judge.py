"""LLM-as-judge stage: one row stage for every judge kind.

`JudgeStage(judge, engine, weak_engine)` runs on the engine(s) its pool loaded and, per batch, picks the
responses to judge (`shared.judge_targets`), skips the judge's own model's outputs when
`exclude_self` is on, and hands the rest to the configured kind:

* `pointwise` (default): each response scored against a rubric (`judges.pointwise`);
* `pairwise`: response pairs compared in both orders, win rates (`judges.pairwise`);
* `listwise`: all of a prompt's responses rated in one shuffled call (`judges.listwise`);
* `cdr`: strong-over-weak log-density ratio, no prompt parsing (`judges.cdr`).

Input columns: prompt rows with `responses`. Output: each judged response gains
`scores[name]`, `judge_status[name]` (ok | no_score | parse_failed ... | skipped_self | ...)
and, where the kind has one, `rationales[name]`; pairwise and listwise also record their
comparisons or shuffle in the row's `judge_records`.
"""

from __future__ import annotations

from prefgen.config import LLMJudgeConfig
from prefgen.judges.cdr import judge_cdr
from prefgen.judges.listwise import judge_listwise
from prefgen.judges.names import judge_scales
from prefgen.judges.pairwise import judge_pairwise
from prefgen.judges.pointwise import judge_pointwise
from prefgen.judges.shared import judge_targets, question_text, split_self_judged

__all__ = ["KINDS", "JudgeStage", "judge_targets", "question_text"]

# judge.llm[].kind -> how that kind judges a batch: (rows, targets, judge, engine, weak engine).
# A new kind is one module with its judge function plus one line here (docs/judges.md).
KINDS = {
    "pointwise": judge_pointwise,
    "pairwise": judge_pairwise,
    "listwise": judge_listwise,
    "cdr": judge_cdr,
}


class JudgeStage:
    """Row stage: one LLM judge over a batch, on the engine(s) its pool loaded.

    `weak_engine` is the cdr judge's weak model (the judge's own engine when they share weights).
    """

    def __init__(self, judge: LLMJudgeConfig, engine, weak_engine=None):
        if judge.kind not in KINDS:
            raise ValueError(f"unknown judge kind {judge.kind!r}")
        self.judge = judge
        self.score_names = list(judge_scales(judge))
        self.engine = engine
        self.weak_engine = weak_engine or engine

    def __call__(self, rows: list[dict]) -> list[dict]:
        targets = split_self_judged(rows, judge_targets(rows), self.judge, self.score_names)
        KINDS[self.judge.kind](rows, targets, self.judge, self.engine, self.weak_engine)
        return rows
