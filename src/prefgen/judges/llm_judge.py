"""LLM-as-judge stage: rubric scores for every response, from a judge model.

Modes (config `judge.llm[].mode`):
* `probability`: the score is the probability-weighted mean over the score labels right after
  the rubric's answer prefix (e.g. "Score: ["). One forward pass per response; gives a usable,
  graded signal even from judges too small to write a well-formed verdict.
* `generate`: the judge writes its analysis and a score; the score is parsed; an unparseable
  reply is retried with a fresh sample, then recorded as `parse_failed` (never a crash).
* `both`: the parsed score when there is one, else the weighted one; the reply is the rationale.

Input columns: prompt rows with `responses`. Output: each response gains `scores[name]`,
`rationales[name]` (generate/both) and `judge_status[name]` (ok | parse_failed | ...).
"""

from __future__ import annotations

import pyarrow as pa

from prefgen.config import LLMJudgeConfig, judge_score_names
from prefgen.engines import GenerationRequest, load_engine
from prefgen.judges.parsing import parse_rating, weighted_score
from prefgen.judges.rubrics import get_rubric, render_judge_messages, score_labels, score_prefix
from prefgen.rows import decode_batch, encode_batch, is_ok, stable_seed


def judge_targets(rows: list[dict]) -> list[tuple[int, int]]:
    """(row, response) positions worth judging: ok rows, responses with text."""
    return [
        (i, j)
        for i, row in enumerate(rows)
        if is_ok(row)
        for j, response in enumerate(row["responses"])
        if response["text"].strip() and not response["finish_reason"].startswith("error")
    ]


def question_text(messages: list[dict]) -> str:
    """The conversation as the judge sees it: the last user turn, with earlier turns as context."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages if m["role"] != "system")


class JudgeStage:
    def __init__(self, judge: LLMJudgeConfig):
        self.judge = judge
        self.rubric = get_rubric(judge.rubric)
        self.names = dict(
            zip(self.rubric.aspects, judge_score_names(judge.name, self.rubric.aspects))
        )
        self.engine = load_engine(judge.model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = decode_batch(batch)
        targets = judge_targets(rows)
        for aspect, name in self.names.items():
            convs = [
                render_judge_messages(
                    self.rubric,
                    aspect,
                    question_text(rows[i]["messages"]),
                    rows[i]["responses"][j]["text"],
                    rows[i]["domain"],
                    rows[i]["reference"],
                )
                for i, j in targets
            ]
            if not convs:
                continue
            weighted = [None] * len(convs)
            if self.judge.mode in ("probability", "both"):
                probs = self.engine.label_probabilities(
                    convs, score_prefix(self.rubric), score_labels(self.rubric)
                )
                weighted = [weighted_score(p) for p in probs]
            parsed, replies = [None] * len(convs), [None] * len(convs)
            if self.judge.mode in ("generate", "both"):
                parsed, replies = self._generate_scores(convs, [rows[i]["id"] for i, _ in targets])
            for k, (i, j) in enumerate(targets):
                response = rows[i]["responses"][j]
                score = parsed[k] if parsed[k] is not None else weighted[k]
                response["scores"][name] = score
                if replies[k] is not None:
                    response["rationales"][name] = replies[k]
                if self.judge.mode == "generate" and parsed[k] is None:
                    response["judge_status"][name] = (
                        f"parse_failed after {self.judge.max_retries + 1} tries"
                    )
                else:
                    response["judge_status"][name] = "ok" if score is not None else "no_score"
        return encode_batch(rows)

    def _generate_scores(self, convs: list[list[dict]], ids: list[str]) -> tuple[list, list]:
        """Ask, parse, re-ask the unparsed with a new seed, up to max_retries times."""
        parsed: list[float | None] = [None] * len(convs)
        replies: list[str | None] = [None] * len(convs)
        pending = list(range(len(convs)))
        for attempt in range(self.judge.max_retries + 1):
            if not pending:
                break
            requests = [
                GenerationRequest(
                    convs[k],
                    self.judge.max_tokens,
                    temperature=0.0 if attempt == 0 else 0.7,
                    top_p=0.95,
                    seed=stable_seed(ids[k], self.judge.name, k, attempt),
                )
                for k in pending
            ]
            outs = self.engine.generate(requests)
            still = []
            for k, out in zip(pending, outs):
                replies[k] = out.text
                parsed[k] = parse_rating(out.text, self.rubric.scale)
                if parsed[k] is None:
                    still.append(k)
            pending = still
        return parsed, replies
