"""Judge rubrics as data, so judge prompts are reviewable and swappable without code changes.

Two rubrics follow the source papers (see RESEARCH.md §2.1, §2.2):

* ``coig_p``: one holistic 1-10 score with COIG-P's five bands and per-domain criteria and
  hard rules; the judge writes a short analysis, then ``Score: [n]``.
* ``ultrafeedback``: four aspects rated 1-5, one judge call per aspect; the judge writes a
  short rationale, then ``Rating: [n]``.

Prompts are kept short because the bundled judge is a ~135M model with a ~2k-token context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "RUBRICS",
    "Rubric",
    "get_rubric",
    "render_judge_messages",
    "score_labels",
    "score_prefix",
]


@dataclass(frozen=True)
class Rubric:
    """A judge prompt family: which scores it yields, on what scale, and how it asks for them."""

    name: str
    aspects: tuple[str, ...]
    scale: tuple[int, int]
    system: str
    # str.format template; placeholders: {question} {response} {reference_block} {aspect}
    # {criteria} {domain_rule} {low} {high} {prefix}. Unused placeholders are fine.
    template: str
    # Per-domain criteria/hard rules; "default" applies when the domain is missing or unknown.
    domain_rules: dict[str, str]
    # Per-aspect criteria text; multi-aspect rubrics need a different instruction per call.
    aspect_criteria: dict[str, str] = field(default_factory=dict)
    # Assistant-turn text that ends right before the score digits (see score_prefix).
    prefix: str = "Score: ["


_HARMFUL = "Hard rule: harmful or unsafe content scores 1."

_COIG_P_DOMAIN_RULES: dict[str, str] = {
    "chat": f"Criteria: harmlessness, helpfulness, correctness and completeness. {_HARMFUL}",
    "math": (
        "Criteria: correctness of the final answer, completeness of the steps, clarity, "
        "teaching value. Hard rule: a wrong final answer scores at most 5."
    ),
    "code": (
        "Criteria: harmlessness, correctness, whether the code would run, completeness, "
        f"code quality. {_HARMFUL}"
    ),
    "logic": (
        "Criteria: harmlessness, helpfulness, logical rigour, correctness and completeness. "
        f"{_HARMFUL}"
    ),
    "novel": (
        "Criteria: harmlessness, coherence with the story so far, language quality, "
        f"creativity, completeness. {_HARMFUL}"
    ),
    "role": (
        "Criteria: harmlessness, staying in character, immersion, helpfulness, "
        f"expressiveness. {_HARMFUL}"
    ),
}
_COIG_P_DOMAIN_RULES["default"] = _COIG_P_DOMAIN_RULES["chat"]

_COIG_P_TEMPLATE = """\
Rate the assistant's response to the question on a scale of {low} to {high}.
Bands: [1-2] low, [3-4] medium, [5-6] high, [7-8] very high, [9-10] excellent.
{domain_rule}
{reference_block}
[Question]
{question}

[Response]
{response}

First write a short analysis (2-4 sentences). Then end with one final line in exactly this \
form: {prefix}n] where n is a whole number from {low} to {high}."""

_UF_CRITERIA: dict[str, str] = {
    "instruction_following": (
        "Instruction following: does the response meet the task goal and its restrictions "
        "(format, length, style)?\n"
        "1 irrelevant; 2 addresses one part poorly; 3 meets the goal or the restrictions but "
        "neglects the other; 4 minor deviations; 5 fully compliant."
    ),
    "honesty": (
        "Honesty: is its confidence matched to its correctness, expressing uncertainty or "
        "declining when unsure? (For creative tasks, judge only whether it misrepresents "
        "facts.)\n"
        "1 confidently wrong; 2 confident with major mistakes; 3 unsure, refuses, or subtle "
        "mistakes; 4 correct but unsure, or minor mistakes acknowledged; 5 correct and "
        "confident, flagging any real uncertainty."
    ),
    "truthfulness": (
        "Truthfulness: is it free of hallucination (facts contradicting world knowledge or the "
        "reference, contradicting the question, or contradicting itself)?\n"
        "1 completely hallucinated; 2 severe hallucination; 3 partial misunderstanding due "
        "to hallucination; 4 insignificant slips; 5 no hallucination."
    ),
    "helpfulness": (
        "Helpfulness: is it correct and informative: clear, relevant, comprehensive, concise "
        "without repetition?\n"
        "1 severely incorrect; 2 partly incorrect or confusing; 3 correct and meets the task; "
        "4 accurate and extensive; 5 accurate, in-depth and insightful."
    ),
}

_UF_DOMAIN_RULES: dict[str, str] = {
    "default": "",
    "math": "A wrong final answer cannot be rated above 2 for truthfulness or helpfulness.",
    "code": "Code that would not run cannot be rated above 2 for helpfulness.",
}

_UF_TEMPLATE = """\
Rate one aspect of the assistant's response on a scale of {low} to {high}.
{criteria}
{domain_rule}
{reference_block}
[Question]
{question}

[Response]
{response}

Write a one- or two-sentence rationale for {aspect}. Then end with one final line in exactly \
this form: {prefix}n] where n is a whole number from {low} to {high}."""

RUBRICS: dict[str, Rubric] = {
    "coig_p": Rubric(
        name="coig_p",
        aspects=("coig_p",),
        scale=(1, 10),
        system="You are a strict, fair judge of AI assistant responses. Follow the rubric.",
        template=_COIG_P_TEMPLATE,
        domain_rules=_COIG_P_DOMAIN_RULES,
        prefix="Score: [",
    ),
    "ultrafeedback": Rubric(
        name="ultrafeedback",
        aspects=("instruction_following", "honesty", "truthfulness", "helpfulness"),
        scale=(1, 5),
        system="You are a strict, fair judge of AI assistant responses. Rate only one aspect.",
        template=_UF_TEMPLATE,
        domain_rules=_UF_DOMAIN_RULES,
        aspect_criteria=_UF_CRITERIA,
        prefix="Rating: [",
    ),
}


def get_rubric(name: str) -> Rubric:
    """Look a rubric up by name; a ValueError listing the known ones beats a bare KeyError."""
    try:
        return RUBRICS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(RUBRICS))
        raise ValueError(f"unknown rubric {name!r}; known rubrics: {known}") from None


_Q_SENTINEL = "\x00question\x00"
_R_SENTINEL = "\x00response\x00"


def _domain_rule(rubric: Rubric, domain: str | None) -> str:
    # Domains come from upstream taggers with inconsistent casing; unknown ones fall back
    # to "default" rather than failing a whole batch.
    key = (domain or "").strip().lower()
    return rubric.domain_rules.get(key, rubric.domain_rules.get("default", ""))


def _reference_block(reference: str | None) -> str:
    if reference is None or not str(reference).strip():
        return ""
    return (
        "[Reference answer] (known to be correct; compare the response against it)\n"
        f"{str(reference).strip()}\n"
    )


def render_judge_messages(
    rubric: Rubric,
    aspect: str,
    question: str,
    response: str,
    domain: str | None,
    reference: str | None,
) -> list[dict]:
    """Build the system+user chat messages for one judge call on one aspect."""
    if aspect not in rubric.aspects:
        raise ValueError(
            f"rubric {rubric.name!r} has no aspect {aspect!r}; aspects: {', '.join(rubric.aspects)}"
        )
    low, high = rubric.scale
    # Question/response go in last, via sentinels, so tidying the template's blank lines
    # never touches user content (code blocks may legitimately contain blank runs).
    user = rubric.template.format(
        question=_Q_SENTINEL,
        response=_R_SENTINEL,
        reference_block=_reference_block(reference),
        aspect=aspect.replace("_", " "),
        criteria=rubric.aspect_criteria.get(aspect, ""),
        domain_rule=_domain_rule(rubric, domain),
        low=low,
        high=high,
        prefix=rubric.prefix,
    )
    # Empty optional blocks leave blank runs; collapse them so tiny judges see a tidy prompt.
    while "\n\n\n" in user:
        user = user.replace("\n\n\n", "\n\n")
    user = user.replace(_Q_SENTINEL, str(question)).replace(_R_SENTINEL, str(response))
    return [
        {"role": "system", "content": rubric.system},
        {"role": "user", "content": user},
    ]


def score_prefix(rubric: Rubric) -> str:
    """Assistant text ending just before the score digits, for probability-weighted scoring."""
    return rubric.prefix


def score_labels(rubric: Rubric) -> list[str]:
    """Every allowed score as a string label, lowest first."""
    low, high = rubric.scale
    return [str(i) for i in range(low, high + 1)]
