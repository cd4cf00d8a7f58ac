"""Rubrics defined in the pipeline YAML, and the one lookup of a judge's rubric.

A new rubric is a template plus a few lines of config: ``judge.rubrics.NAME`` (a
``prefgen.config.RubricConfig``), usually starting from a built-in ``base`` and replacing
only what differs. ``build_rubric`` turns a definition into a ``Rubric`` and says which
field is wrong when it cannot; ``prefgen.judges.checks`` runs it on every definition, so a bad
template fails on load, never in a judge actor.

Judge stages run in Ray actors (and vLLM map tasks) that receive only their own
``LLMJudgeConfig``, so the definitions a judge uses travel on it: the judge config (``JudgeConfig``) copies
them into ``LLMJudgeConfig.rubric_specs``. ``rubric_for(judge, domain)`` reads them there,
else the built-in registry; it is the only way callers (score names and scales,
validation, verifier caps, each judge kind, vLLM judging) find a judge's rubric.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Formatter
from typing import Any

from prefgen.judges.rubrics import (
    DEFAULT_SYSTEM,
    PLACEHOLDERS,
    RUBRICS,
    Rubric,
    get_rubric,
    rubric_name_for_domain,
)

__all__ = ["RubricSpecError", "build_rubric", "check_template", "rubric_for"]

# A template without these would not show the judge what it is judging.
_REQUIRED_PLACEHOLDERS = ("question", "response")
# Scores are whole-number labels the probability mode reads as tokens (one probability
# each); 0-100 covers every rubric family we know and keeps that list short.
_LOWEST, _HIGHEST = 0, 100


class RubricSpecError(ValueError):
    """A bad rubric definition; ``field`` is the definition's key at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def rubric_for(judge, domain: str | None = None) -> Rubric:
    """The rubric a judge (an ``LLMJudgeConfig``) applies to a row of `domain`.

    ``rubric_by_domain`` (case-insensitive), else ``rubric``; a name with a definition in the
    judge's ``rubric_specs`` is built from it, any other is a built-in. None: the default.
    """
    name = rubric_name_for_domain(judge.rubric, judge.rubric_by_domain, domain)
    spec = (judge.rubric_specs or {}).get(name)
    return get_rubric(name) if spec is None else build_rubric(name, spec)


def build_rubric(name: str, spec: Any) -> Rubric:
    """A ``Rubric`` from a definition: a ``RubricConfig`` or a mapping; None = not given.

    With ``base`` (a built-in rubric), a field not given is the base's and a given one
    replaces it whole (dicts are not merged); the base's criteria and caps for aspects the
    new rubric lacks are dropped. Without ``base``, ``aspects``, ``scale`` and ``template``
    are required; ``system``, ``domain_rules`` and ``prefix`` default to the generic judge
    system prompt, no rules and ``"Score: ["``. Raises RubricSpecError naming the field.
    """
    base_name = _given(spec, "base")
    if base_name is not None and base_name not in RUBRICS:
        known = ", ".join(sorted(RUBRICS))
        raise RubricSpecError("base", f"unknown built-in rubric {base_name!r}; known: {known}")
    base = RUBRICS.get(base_name) if base_name is not None else None

    def given_or_base(key: str, fallback: Any = None) -> Any:
        value = _given(spec, key)
        if value is not None:
            return value
        if base is not None:
            return getattr(base, key)
        if fallback is None:
            raise RubricSpecError(key, "is required when the rubric has no base")
        return fallback

    aspects = tuple(given_or_base("aspects"))
    if not aspects or not all(isinstance(a, str) and a.strip() for a in aspects):
        raise RubricSpecError("aspects", f"must list at least one aspect name, got {list(aspects)}")
    if len(set(aspects)) != len(aspects):
        raise RubricSpecError("aspects", f"must be unique, got {list(aspects)}")
    scale = _check_scale(given_or_base("scale"))
    template = given_or_base("template")
    check_template(template)

    def per_aspect(key: str) -> dict:
        value = _given(spec, key)
        if value is None:  # inherited (or none): keep what still names an aspect
            inherited = getattr(base, key) if base is not None else {}
            return {a: v for a, v in inherited.items() if a in aspects}
        unknown = sorted(set(value) - set(aspects))
        if unknown:
            raise RubricSpecError(
                key, f"names no aspect of this rubric: {unknown}; aspects: {list(aspects)}"
            )
        return dict(value)

    caps = {aspect: float(cap) for aspect, cap in per_aspect("verifier_caps").items()}
    for aspect, cap in caps.items():
        if not scale[0] <= cap <= scale[1]:
            raise RubricSpecError(
                "verifier_caps", f"cap {cap:g} for {aspect!r} is outside the scale {list(scale)}"
            )
    domain_rules = given_or_base("domain_rules", {"default": ""})
    return Rubric(
        name=name,
        aspects=aspects,
        scale=scale,
        system=given_or_base("system", DEFAULT_SYSTEM),
        template=template,
        # A row's domain is matched lower-cased, so keys are stored that way.
        domain_rules={str(k).strip().lower(): str(v) for k, v in domain_rules.items()},
        aspect_criteria=per_aspect("aspect_criteria"),
        prefix=given_or_base("prefix", "Score: ["),
        verifier_caps=caps,
    )


def check_template(template: str) -> None:
    """Raise RubricSpecError unless `template` formats with ``PLACEHOLDERS`` and no others.

    Checked by formatting it with stand-in values of the real types (text; whole numbers for
    ``low`` and ``high``), so a stray brace or a format spec the real values reject fails on
    load. It must also show the judge ``{question}`` and ``{response}``.
    """
    stand_ins: dict[str, Any] = {key: "x" for key in PLACEHOLDERS}
    stand_ins.update(low=1, high=10)
    try:
        template.format(**stand_ins)
        used = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except KeyError as exc:
        known = " ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        raise RubricSpecError(
            "template", f"unknown placeholder {{{exc.args[0]}}}; known: {known}"
        ) from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise RubricSpecError(
            "template", f"not a str.format template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    missing = [f"{{{p}}}" for p in _REQUIRED_PLACEHOLDERS if p not in used]
    if missing:
        raise RubricSpecError("template", f"must show the judge {' and '.join(missing)}")


def _given(spec: Any, key: str) -> Any:
    if isinstance(spec, Mapping):
        return spec.get(key)
    return getattr(spec, key, None)


def _check_scale(scale: Any) -> tuple[int, int]:
    values = list(scale) if isinstance(scale, list | tuple) else [scale]
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not whole or not _LOWEST <= values[0] < values[1] <= _HIGHEST:
        raise RubricSpecError(
            "scale",
            f"must be [low, high], whole numbers with {_LOWEST} <= low < high <= {_HIGHEST}, "
            f"got {list(values)}",
        )
    return values[0], values[1]
