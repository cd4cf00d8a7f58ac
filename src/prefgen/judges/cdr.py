"""CDR judging: a customizable density ratio of a strong over a weak model (docs/research.md "CDR: strong-over-weak density ratio").

    score = log p_strong(response | criteria + prompt) - log p_weak(response | prompt)

A response the criteria-conditioned strong model finds much more likely than the weak model
does is one the criteria favour. No judge prompt is written and nothing is parsed: both terms
are teacher-forced log-probabilities from our engines (`Engine.response_logprobs`), so the
score is cheap, deterministic and never "unparseable".

The strong model is `judge.model`, conditioned on `criteria` (or `criteria_by_domain`, or
`DEFAULT_CRITERIA`) as its system prompt; the weak model is `judge.weak_model` with its own
`system_prompt`, or, when unset, the same weights with no system prompt. In the quickstart
both are the bundled 135M model, so the score measures only what the criteria prompt changes;
with real models use a stronger and a weaker checkpoint of one family (CDR's capability gap).

Input: rows with responses. Output: `scores[name]` (nats), `rationales[name]` (both
log-probabilities, `strong_logprob=... weak_logprob=...`), `judge_status[name]` (ok | error: too_long).
"""

from __future__ import annotations

from prefgen.config import LLMJudgeConfig
from prefgen.judges.shared import call_in_chunks, record

__all__ = ["DEFAULT_CRITERIA", "cdr_conversations", "criteria_for", "density_ratio", "judge_cdr"]

DEFAULT_CRITERIA = (
    "You are a helpful, honest and harmless assistant. Answer the user's request correctly "
    "and completely, reason carefully, stay clear and concise, say when you are unsure, and "
    "decline requests that could cause harm."
)


def criteria_for(judge: LLMJudgeConfig, domain: str | None) -> str:
    """The strong model's criteria for a row: per domain, else `criteria`, else the default."""
    key = (domain or "").strip().lower()
    for name, text in judge.criteria_by_domain.items():
        if name.strip().lower() == key:
            return text
    return judge.criteria or DEFAULT_CRITERIA


def cdr_conversations(
    messages: list[dict], criteria: str, weak_system: str | None
) -> tuple[list[dict], list[dict]]:
    """(strong, weak) conversations for one prompt.

    The strong side gets the criteria as its system prompt (appended to the prompt's own
    system turn, if any); the weak side sees the prompt as given, or `weak_system` in place
    of a missing system turn.
    """
    turns = [dict(m) for m in messages]
    if turns and turns[0]["role"] == "system":
        strong = [
            {"role": "system", "content": f"{turns[0]['content']}\n\n{criteria}"},
            *turns[1:],
        ]
        return strong, turns
    strong = [{"role": "system", "content": criteria}, *turns]
    weak = [{"role": "system", "content": weak_system}, *turns] if weak_system else turns
    return strong, weak


def _num(value: float | None) -> str:
    return "None" if value is None else f"{value:.6f}"


def density_ratio(strong_logprob: float | None, weak_logprob: float | None) -> float | None:
    """log p_strong - log p_weak, or None when either side could not be computed."""
    if strong_logprob is None or weak_logprob is None:
        return None
    return float(strong_logprob) - float(weak_logprob)


def judge_cdr(
    rows: list[dict], targets: list[tuple[int, int]], judge: LLMJudgeConfig, strong, weak
) -> None:
    """Score every target response with the strong-over-weak log-density ratio."""
    if not targets:
        return
    weak_system = judge.weak_model.system_prompt if judge.weak_model is not None else None
    strong_convs, weak_convs, texts = [], [], []
    for i, j in targets:
        row = rows[i]
        s, w = cdr_conversations(row["messages"], criteria_for(judge, row["domain"]), weak_system)
        strong_convs.append(s)
        weak_convs.append(w)
        texts.append(row["responses"][j]["text"])
    size = judge.model.batch_size
    pairs = list(zip(strong_convs, texts))
    strong_lp = call_in_chunks(
        lambda c: strong.response_logprobs([p[0] for p in c], [p[1] for p in c]), pairs, size
    )
    pairs = list(zip(weak_convs, texts))
    weak_lp = call_in_chunks(
        lambda c: weak.response_logprobs([p[0] for p in c], [p[1] for p in c]), pairs, size
    )
    for k, (i, j) in enumerate(targets):
        score = density_ratio(strong_lp[k], weak_lp[k])
        why = f"strong_logprob={_num(strong_lp[k])} weak_logprob={_num(weak_lp[k])}"
        status = None if score is not None else "error: too_long"
        record(rows[i]["responses"][j], judge.name, score, status, why)
