"""Prompt curation before generation: an LLM prompt-quality filter and a domain tagger.

Both are row stages on a model (`prefgen.run.registry` places them in a pool, which retries a
failing batch, then splits it), and both read the model's label probabilities after a fixed
answer prefix, as probability-mode judges do: one forward pass per prompt, and a graded signal
even from a small model.

* `PromptQualityStage` (COIG-P: queries rated below 5 of 10 are dropped; docs/research.md "COIG-P: prompt curation"):
  the rubric `prompt_quality` (judges.rubrics.PROMPT_RUBRICS) rates each prompt 1-10; the
  probability-weighted score goes to `prompt_quality` and a prompt below
  `ingest.quality_filter.threshold` is rejected (stage `ingest`, `low_quality: 3.2 < 5`).
* `DomainTaggerStage`: zero-shot classification over `ingest.domain_tagger.labels` for
  prompts without a domain (`general`); a given domain is kept. The most probable label
  becomes the row's `domain`, with `domain_tag` = {label, p, by: llm}.
* `keyword_domain` / `tag_domains_by_keyword`: the cheap fallback when the tagger has no
  model; pure, run on the driver during ingest, so source quotas can stratify by its tags.

Input columns: prompt rows (`messages`, `domain`, `status`). Output: the same rows, with
`prompt_quality` / `domain_tag` / `domain` / `status` updated as above; rejected rows pass
through untouched.
"""

from __future__ import annotations

import math
import re
from typing import Any

from prefgen.config import DomainTaggerConfig, QualityFilterConfig
from prefgen.data.rows import is_ok, reject
from prefgen.ingest.records import DEFAULT_DOMAIN
from prefgen.judges.parsing import weighted_score
from prefgen.judges.rubrics import PROMPT_RUBRICS, render_judge_messages, score_labels
from prefgen.judges.shared import call_in_chunks, question_text

__all__ = [
    "DomainTaggerStage",
    "PromptQualityStage",
    "keyword_domain",
    "pick_label",
    "quality_verdict",
    "tag_domains_by_keyword",
    "tagger_messages",
]

QUALITY_RUBRIC = PROMPT_RUBRICS["prompt_quality"]


# -- quality filter --------------------------------------------------------------------------


def quality_verdict(score: float | None, threshold: float) -> str | None:
    """The reject reason for a prompt's 1-10 quality, or None to keep it.

    No score (the rater put no mass on any label) keeps the prompt: a filter that cannot
    judge should not silently drop data; `prompt_quality` stays None so it can be found.
    """
    if score is None or score >= threshold:
        return None
    shown = math.floor(score * 100) / 100  # floored, so "4.99 < 5" never prints as "5.0 < 5"
    return f"low_quality: {shown:g} < {threshold:g}"


class PromptQualityStage:
    """Rates each valid prompt 1-10 (rubric prompt_quality); rejects those below threshold."""

    def __init__(self, cfg: QualityFilterConfig, engine):
        self.cfg = cfg
        self.engine = engine

    def __call__(self, rows: list[dict]) -> list[dict]:
        targets = [row for row in rows if is_ok(row)]
        convs = [
            render_judge_messages(
                QUALITY_RUBRIC,
                "prompt_quality",
                question_text(row["messages"]),
                "",
                row["domain"],
                None,
            )
            for row in targets
        ]
        labels = score_labels(QUALITY_RUBRIC)
        probs = call_in_chunks(
            lambda chunk: self.engine.label_probabilities(chunk, QUALITY_RUBRIC.prefix, labels),
            convs,
            self.cfg.model.batch_size,
        )
        for row, label_probs in zip(targets, probs):
            score = weighted_score(label_probs)
            row["prompt_quality"] = None if score is None else round(score, 3)
            reason = quality_verdict(score, self.cfg.threshold)
            if reason:
                reject(row, "ingest", reason)
        return rows


# -- domain tagger ---------------------------------------------------------------------------

TAGGER_SYSTEM = "You sort the requests users send to an AI assistant into categories."
TAGGER_PREFIX = "Category: ["
_TAGGER_TEMPLATE = """\
Which category fits this request best? Categories: {labels}.

[Request]
{question}

End with one final line in exactly this form: {prefix}name] where name is one of the \
categories."""


def tagger_messages(question: str, labels: list[str]) -> list[dict]:
    """System + user messages asking for one of `labels`; the answer follows TAGGER_PREFIX."""
    user = _TAGGER_TEMPLATE.format(
        labels=", ".join(labels), question="\x00q\x00", prefix=TAGGER_PREFIX
    )
    return [
        {"role": "system", "content": TAGGER_SYSTEM},
        {"role": "user", "content": user.replace("\x00q\x00", question)},  # braces stay verbatim
    ]


def pick_label(label_probs: dict[str, float], labels: list[str]) -> tuple[str, float] | None:
    """The most probable label (ties: the earlier in `labels`), or None without any mass."""
    best = max(labels, key=lambda label: (label_probs.get(label, 0.0), -labels.index(label)))
    p = float(label_probs.get(best, 0.0))
    return (best, p) if p > 0 else None


def _untagged(row: dict[str, Any]) -> bool:
    return is_ok(row) and (row["domain"] or DEFAULT_DOMAIN) == DEFAULT_DOMAIN


class DomainTaggerStage:
    """Zero-shot domain for valid prompts still `general`, by label probabilities."""

    def __init__(self, cfg: DomainTaggerConfig, engine):
        self.cfg = cfg
        self.labels = [str(label).strip() for label in cfg.labels]
        self.engine = engine

    def __call__(self, rows: list[dict]) -> list[dict]:
        targets = [row for row in rows if _untagged(row)]
        convs = [tagger_messages(question_text(row["messages"]), self.labels) for row in targets]
        probs = call_in_chunks(
            lambda chunk: self.engine.label_probabilities(chunk, TAGGER_PREFIX, self.labels),
            convs,
            self.cfg.model.batch_size,
        )
        for row, label_probs in zip(targets, probs):
            picked = pick_label(label_probs, self.labels)
            if picked is not None:
                row["domain"] = picked[0]
                row["domain_tag"] = {"label": picked[0], "p": round(picked[1], 4), "by": "llm"}
        return rows


# -- keyword fallback ------------------------------------------------------------------------

# Regexes per common domain name (case-insensitive). A label not listed here matches its own
# name as a word. Cheap and crude on purpose: it runs on the driver over every prompt.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "math": (
        r"\d\s*[-+*/^=]\s*\d",
        r"\b(?:solve|equation|calculate|compute|integral|derivative|probability|sum of|"
        r"how many|how much|percent(?:age)?|prime|fraction|algebra|geometry|triangle|"
        r"theorem|math)\b",
    ),
    "code": (
        r"```",
        r"\b(?:python|javascript|typescript|java|c\+\+|rust|golang|sql|html|css|bash|regex|"
        r"function|code|program|script|compile[rs]?|bug|debug|algorithm|api|class|"
        r"implement|refactor|stack trace|exception)\b",
    ),
    "logic": (
        r"\b(?:puzzle|riddle|logic(?:al)?|deduce|if all|syllogism|which of the following|"
        r"true or false|knights? and knaves|who is lying)\b",
    ),
    "novel": (
        r"\b(?:story|continue the|chapter|novel|fiction|poem|once upon a time|plot|"
        r"protagonist)\b",
    ),
    "role": (
        r"\b(?:role-?play|pretend|act as|you are an?|in character|stay in character|"
        r"persona|play the role)\b",
    ),
    "chat": (
        r"\b(?:hello|hi|hey|how are you|advice|recommend|opinion|what do you think|"
        r"help me|should i|tips?)\b",
    ),
}


def keyword_domain(text: str, labels: list[str]) -> str | None:
    """The label whose keywords match `text` most often (ties: the earlier label); None if none."""
    best, best_hits = None, 0
    for label in labels:
        patterns = KEYWORDS.get(label.lower(), (rf"\b{re.escape(label)}\b",))
        hits = sum(len(re.findall(p, text, flags=re.IGNORECASE)) for p in patterns)
        if hits > best_hits:
            best, best_hits = label, hits
    return best


def tag_domains_by_keyword(rows: list[dict[str, Any]], labels: list[str]) -> None:
    """Tag, in place, valid prompts still `general`; unmatched ones stay `general`."""
    for row in rows:
        if not _untagged(row):
            continue
        label = keyword_domain(question_text(row["messages"]), labels)
        if label is not None:
            row["domain"] = label
            row["domain_tag"] = {"label": label, "p": None, "by": "keyword"}
