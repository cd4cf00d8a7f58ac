"""LLM-as-judge stage: one Ray Data callable class for every judge kind.

`JudgeStage(judge=cfg)` loads the judge's model(s) once per actor and, per batch, picks the
responses to judge (`shared.judge_targets`), skips the judge's own model's outputs when
`exclude_self` is on, and hands the rest to the configured kind:

* `pointwise` (default): each response scored against a rubric (`judges.pointwise`);
* `pairwise`: response pairs compared in both orders, win rates (`judges.pairwise`);
* `listwise`: all of a prompt's responses rated in one shuffled call (`judges.listwise`);
* `cdr`: strong-over-weak log-density ratio, no prompt parsing (`judges.cdr`).

Input columns: prompt rows with `responses`. Output: each judged response gains
`scores[name]`, `judge_status[name]` (ok | no_score | parse_failed ... | skipped_self | ...)
and, where the kind has one, `rationales[name]`; pairwise and listwise also record their
comparisons or shuffle in the row's `meta["judges"][judge name]`.
"""

from __future__ import annotations

import pyarrow as pa

from prefgen.config import LLMJudgeConfig
from prefgen.data.rows import decode_batch, encode_batch
from prefgen.engines import load_engine
from prefgen.judges.cdr import judge_cdr
from prefgen.judges.listwise import judge_listwise
from prefgen.judges.names import judge_scales
from prefgen.judges.pairwise import judge_pairwise
from prefgen.judges.pointwise import judge_pointwise
from prefgen.judges.shared import judge_targets, question_text, split_self_judged

__all__ = ["JudgeStage", "judge_targets", "question_text"]

_KINDS = {"pointwise": judge_pointwise, "pairwise": judge_pairwise, "listwise": judge_listwise}


def _same_weights(a, b) -> bool:
    """Two model configs that would load identical weights, so one engine can serve both."""
    fields = ("engine", "path", "device", "dtype", "max_model_len")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


class JudgeStage:
    def __init__(self, judge: LLMJudgeConfig):
        if judge.kind not in (*_KINDS, "cdr"):
            raise ValueError(f"unknown judge kind {judge.kind!r}")
        self.judge = judge
        self.score_names = list(judge_scales(judge))
        self.engine = load_engine(judge.model)
        self.weak_engine = self.engine
        weak = judge.weak_model
        if judge.kind == "cdr" and weak is not None and not _same_weights(judge.model, weak):
            self.weak_engine = load_engine(weak)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = decode_batch(batch)
        targets = split_self_judged(rows, judge_targets(rows), self.judge, self.score_names)
        if self.judge.kind == "cdr":
            judge_cdr(rows, targets, self.judge, self.engine, self.weak_engine)
        else:
            _KINDS[self.judge.kind](rows, targets, self.judge, self.engine)
        return encode_batch(rows)
