"""Judge rubrics as data, so judge prompts are reviewable and swappable without code changes.

A rubric is a template plus a few lines of data (aspects, scale, criteria). The registry
follows the source papers (one section per paper in docs/research.md):

* ``coig_p``: one holistic 1-10 score with COIG-P's five bands and per-domain criteria and
  hard rules (chosen by the row's domain); the judge writes a short analysis, then
  ``Score: [n]``. ``coig_p_<domain>`` (chat, math, code, logic, novel, role) pin one domain's
  criteria, for ``rubric_by_domain`` maps whose domain names differ from COIG-P's.
* ``ultrafeedback``: four aspects rated 1-5, one judge call per aspect, then ``Rating: [n]``.
* ``ultrafeedback_critique``: UltraFeedback's critique pass: teacher-style feedback, then an
  overall 1-10 score.
* ``helpsteer2``: HelpSteer2's five attributes on 0-4 (complexity and verbosity are not
  "higher is better": weight them 0 for ``overall`` unless you mean it).
* ``codeultrafeedback``: CodeUltraFeedback's five coding preferences on 1-5.

Hard rules are rubric text for the judge; where a rule is checkable it is also data
(``verifier_caps``) that ``prefgen.judges.scoring`` applies as a cap after the verifier ran.

A pipeline can define its own rubrics in its YAML (``judge.rubrics``), often starting from
one of these; ``prefgen.judges.custom_rubrics`` builds them and looks up a judge's rubric.

Prompts are kept short because the bundled judge is a ~135M model with a ~2k-token context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SYSTEM",
    "PLACEHOLDERS",
    "RUBRICS",
    "Rubric",
    "fill_template",
    "get_rubric",
    "reference_block",
    "render_judge_messages",
    "rubric_criteria",
    "rubric_name_for_domain",
    "score_labels",
    "score_prefix",
]

DEFAULT_SYSTEM = "You are a strict, fair judge of AI assistant responses. Follow the rubric."


# Every slot render_judge_messages fills; a template may use any of them, and no other.
PLACEHOLDERS = (
    "question",
    "response",
    "reference_block",
    "aspect",
    "criteria",
    "domain_rule",
    "low",
    "high",
    "prefix",
)


@dataclass(frozen=True)
class Rubric:
    """A judge prompt family: which scores it yields, on what scale, and how it asks for them."""

    name: str
    aspects: tuple[str, ...]
    scale: tuple[int, int]
    system: str
    # str.format template over PLACEHOLDERS: {question} {response} {reference_block} {aspect}
    # {criteria} {domain_rule} {low} {high} {prefix}. Unused placeholders are fine.
    template: str
    # Per-domain criteria/hard rules; "default" applies when the domain is missing or unknown.
    domain_rules: dict[str, str]
    # Per-aspect criteria text; multi-aspect rubrics need a different instruction per call.
    aspect_criteria: dict[str, str] = field(default_factory=dict)
    # Assistant-turn text that ends right before the score digits (see score_prefix).
    prefix: str = "Score: ["
    # Checkable hard rules: aspect -> highest score allowed when a verifier (e.g. the math
    # answer check) marks the response wrong. Applied in scoring, after the verifier ran.
    verifier_caps: dict[str, float] = field(default_factory=dict)


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

_CRITIQUE_TEMPLATE = """\
Give teacher-style feedback on the assistant's response: what is wrong, missing or unclear, \
and how it could improve. Do not rewrite the response.
{domain_rule}
{reference_block}
[Question]
{question}

[Response]
{response}

Write 2-4 sentences of feedback. Then end with one final line in exactly this form: \
{prefix}n] where n is the overall quality, a whole number from {low} to {high}."""

# HelpSteer2's attribute definitions (dataset card), one 0-4 rating each.
_HELPSTEER2_CRITERIA: dict[str, str] = {
    "helpfulness": "Helpfulness: how useful the response is for the prompt, overall.",
    "correctness": "Correctness: includes all pertinent facts, without errors.",
    "coherence": "Coherence: consistent and clear expression.",
    "complexity": (
        "Complexity: the intellectual depth needed to write the response (0 anyone who "
        "speaks the language; 4 deep domain expertise)."
    ),
    "verbosity": (
        "Verbosity: the amount of detail relative to what the prompt asks for (0 terse; "
        "4 far more than asked)."
    ),
}

# CodeUltraFeedback's five coding preferences (docs/research.md "CodeUltraFeedback: five coding preferences"), 1-5 each.
_CODE_UF_CRITERIA: dict[str, str] = {
    "instruction_following": (
        "Instruction following: does the code do what the user asked, deviating only when "
        "necessary and saying why?\n1 ignores the instructions; 3 mostly follows them; "
        "5 follows them exactly."
    ),
    "complexity": (
        "Complexity and efficiency: is the algorithm correct and economical in time and "
        "memory?\n1 slow and wasteful; 3 reasonable with room to optimise; 5 optimal."
    ),
    "style": (
        "Coding style: is the code idiomatic for its language, maintainable and "
        "consistent?\n1 ignores the language's conventions; 3 mostly idiomatic; 5 exemplary."
    ),
    "readability": (
        "Readability: are the code, names and comments clear and concise?\n1 hard to "
        "follow; 3 reasonably clear; 5 clear to readers of any background."
    ),
    "explanation": (
        "Explanation: does the text explain the code's purpose, logic and design choices "
        "clearly and in depth?\n1 missing or unclear; 3 clear but shallow; 5 clear and deep."
    ),
}


def _coig_p_for(domain: str) -> Rubric:
    """COIG-P's rubric pinned to one domain's criteria, whatever the row's domain says."""
    caps = {"coig_p": 5.0} if domain == "math" else {}
    return Rubric(
        name=f"coig_p_{domain}",
        aspects=("coig_p",),
        scale=(1, 10),
        system=DEFAULT_SYSTEM,
        template=_COIG_P_TEMPLATE,
        domain_rules={"default": _COIG_P_DOMAIN_RULES[domain]},
        verifier_caps=caps,
    )


RUBRICS: dict[str, Rubric] = {
    "coig_p": Rubric(
        name="coig_p",
        aspects=("coig_p",),
        scale=(1, 10),
        system=DEFAULT_SYSTEM,
        template=_COIG_P_TEMPLATE,
        domain_rules=_COIG_P_DOMAIN_RULES,
        prefix="Score: [",
        # "A wrong final answer scores at most 5": checkable wherever the math verifier runs.
        verifier_caps={"coig_p": 5.0},
    ),
    **{f"coig_p_{d}": _coig_p_for(d) for d in ("chat", "math", "code", "logic", "novel", "role")},
    "ultrafeedback": Rubric(
        name="ultrafeedback",
        aspects=("instruction_following", "honesty", "truthfulness", "helpfulness"),
        scale=(1, 5),
        system="You are a strict, fair judge of AI assistant responses. Rate only one aspect.",
        template=_UF_TEMPLATE,
        domain_rules=_UF_DOMAIN_RULES,
        aspect_criteria=_UF_CRITERIA,
        prefix="Rating: [",
        verifier_caps={"truthfulness": 2.0, "helpfulness": 2.0},
    ),
    "ultrafeedback_critique": Rubric(
        name="ultrafeedback_critique",
        aspects=("overall",),
        scale=(1, 10),
        system="You are a teacher giving feedback on AI assistant responses.",
        template=_CRITIQUE_TEMPLATE,
        domain_rules=_UF_DOMAIN_RULES,
        prefix="Overall Score: [",
    ),
    "helpsteer2": Rubric(
        name="helpsteer2",
        aspects=("helpfulness", "correctness", "coherence", "complexity", "verbosity"),
        scale=(0, 4),
        system="You are a strict, fair judge of AI assistant responses. Rate only one attribute.",
        template=_UF_TEMPLATE,
        domain_rules={"default": ""},
        aspect_criteria=_HELPSTEER2_CRITERIA,
        prefix="Rating: [",
    ),
    "codeultrafeedback": Rubric(
        name="codeultrafeedback",
        aspects=("instruction_following", "complexity", "style", "readability", "explanation"),
        scale=(1, 5),
        system="You are a strict, fair reviewer of code written by AI assistants.",
        template=_UF_TEMPLATE,
        domain_rules={"default": ""},
        aspect_criteria=_CODE_UF_CRITERIA,
        prefix="Rating: [",
    ),
}


def get_rubric(name: str) -> Rubric:
    """Look a built-in rubric up by name; a ValueError listing the known ones beats a KeyError.

    A judge's rubric (built-in or defined in the pipeline YAML) is ``custom_rubrics.rubric_for``.
    """
    try:
        return RUBRICS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(RUBRICS))
        raise ValueError(
            f"unknown rubric {name!r}; known rubrics: {known} "
            "(or define it under judge.rubrics in the pipeline YAML)"
        ) from None


def fill_template(template: str, user_content: dict[str, str], **slots) -> str:
    """``template.format`` where ``user_content`` values are inserted verbatim, last.

    User content goes in via sentinels after the template's blank runs are tidied, so code
    blocks (which may legitimately hold blank runs or braces) reach the judge untouched.
    """
    sentinels = {key: f"\x00{key}\x00" for key in user_content}
    text = template.format(**sentinels, **slots)
    # Empty optional blocks leave blank runs; collapse them so tiny judges see a tidy prompt.
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    for key, value in user_content.items():
        text = text.replace(sentinels[key], str(value))
    return text


def _domain_rule(rubric: Rubric, domain: str | None) -> str:
    # Domains come from upstream taggers with inconsistent casing; unknown ones fall back
    # to "default" rather than failing a whole batch.
    key = (domain or "").strip().lower()
    return rubric.domain_rules.get(key, rubric.domain_rules.get("default", ""))


def rubric_name_for_domain(default: str, by_domain: dict[str, str], domain: str | None) -> str:
    """The rubric a judge uses for a row: ``by_domain`` (case-insensitive), else ``default``."""
    key = (domain or "").strip().lower()
    for name, rubric in (by_domain or {}).items():
        if name.strip().lower() == key:
            return rubric
    return default


def rubric_criteria(rubric: Rubric, aspect: str | None, domain: str | None) -> str:
    """The rubric's criteria text for one aspect and domain, for prompts that compare responses."""
    parts = [rubric.aspect_criteria.get(aspect or "", ""), _domain_rule(rubric, domain)]
    return "\n".join(p for p in parts if p)


def reference_block(reference: str | None) -> str:
    """The reference-answer block every judge prompt shows when the prompt carries one."""
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
    user = fill_template(
        rubric.template,
        {"question": question, "response": response},
        reference_block=reference_block(reference),
        aspect=aspect.replace("_", " "),
        criteria=rubric.aspect_criteria.get(aspect, ""),
        domain_rule=_domain_rule(rubric, domain),
        low=low,
        high=high,
        prefix=rubric.prefix,
    )
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


# Rubrics that rate a prompt, not a response (prefgen.ingest.prompt_stages); kept apart from RUBRICS
# so no response judge can be configured with one. COIG-P kept queries an LLM rated >= 5 of
# 10 for "whether it reflects a question a typical user might ask" (docs/research.md "COIG-P: prompt curation").
_PROMPT_QUALITY_TEMPLATE = """\
Rate the user request below as a prompt for an AI assistant, on a scale of {low} to {high}.
Is it a question or task a typical user might ask? Is it clear, complete and answerable?
Bands: [1-2] garbled or not a request; [3-4] unclear or missing what an answer needs; \
[5-6] answerable with some guessing; [7-8] clear and answerable; [9-10] clear, specific, \
self-contained.

[Request]
{question}

End with one final line in exactly this form: {prefix}n] where n is a whole number from \
{low} to {high}."""

PROMPT_RUBRICS: dict[str, Rubric] = {
    "prompt_quality": Rubric(
        name="prompt_quality",
        aspects=("prompt_quality",),
        scale=(1, 10),
        system="You are a strict, fair judge of the requests users send to AI assistants.",
        template=_PROMPT_QUALITY_TEMPLATE,
        domain_rules={"default": ""},
    ),
}
