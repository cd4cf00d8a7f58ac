"""Rule-based 0/1 verifier for math final answers against a reference.

Objective domains should not depend on a (possibly tiny) LLM judge's arithmetic: when a
reference answer exists, checking the final answer is cheaper and more reliable
(docs/research.md "Verifiers: unit tests and final answers"). Extraction is heuristic, so the rationale records what was compared.
"""

from __future__ import annotations

import math
import re

__all__ = ["answers_match", "extract_final_answer", "parse_number", "verify_math"]

# A plain number: thousands-grouped or not, optional decimals/exponent. Grouped form first so
# "1,234" is not read as "1".
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
# Numbers (or LaTeX fractions) anywhere in free text, for the last-number fallback. The
# look-behind keeps "x2" or "v1.5" identifiers from counting as answers.
_ANY_NUMBER_RE = re.compile(
    rf"\\[dt]?frac\s*\{{[^{{}}]+\}}\s*\{{[^{{}}]+\}}|(?<![\w.]){_NUMBER}(?:\s*/\s*\d+)?"
)

_FINAL_ANSWER_RE = re.compile(r"final\s+answer\s*(?:is|:|=)?\s*:?\s*([^\n]+)", re.IGNORECASE)
_ANSWER_RE = re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE)
_GSM8K_RE = re.compile(r"####\s*([^\n]+)")

# LaTeX/markdown wrappers that carry no value.
_STRIP_TOKENS = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "{,}", "\\(", "\\)", "\\[", "\\]")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, honouring nested braces."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
        # Unbalanced (e.g. truncated generation): try an earlier box.
    return None


def _trim_sentence(s: str) -> str:
    # "42. Let me double check" -> "42"; a period inside "3.5" is followed by a digit, not space.
    s = re.split(r"\.\s", s, maxsplit=1)[0]
    s = s.strip().strip("*_`").strip()
    return s.rstrip(".").strip()


def extract_final_answer(text: str) -> str | None:
    """The response's final answer: boxed, then '####', 'answer is', trailing '= X', last number."""
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    gsm = _GSM8K_RE.findall(text)
    if gsm and _trim_sentence(gsm[-1]):
        return _trim_sentence(gsm[-1])
    finals = [_trim_sentence(p) for p in _FINAL_ANSWER_RE.findall(text)]
    if finals and finals[-1]:
        return finals[-1]
    # A bare "Answer:" often introduces the whole solution ("Answer: First, we ..."), so
    # trust it only when what follows is a number or a single token such as "B" or "x^2".
    answers = [_trim_sentence(p) for p in _ANSWER_RE.findall(text)]
    if (
        answers
        and answers[-1]
        and (parse_number(answers[-1]) is not None or " " not in answers[-1])
    ):
        return answers[-1]
    last_line = text.strip().splitlines()[-1]
    if "=" in last_line:
        rhs = _trim_sentence(last_line.rsplit("=", 1)[1])
        if rhs:
            return rhs
    numbers = _ANY_NUMBER_RE.findall(text)
    if numbers:
        return numbers[-1].strip()
    return None


def _clean(s: str) -> str:
    s = s.strip().replace("\u2212", "-").replace("\\%", "%").replace("\\$", "$")
    s = re.sub(r"\\text\s*\{[^{}]*\}", " ", s)  # units such as \text{ cm}
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°", "", s)  # degrees are a unit, not a value
    for tok in _STRIP_TOKENS:
        s = s.replace(tok, "")
    return s.replace("$", "").strip()


def _to_float(s: str) -> float | None:
    try:
        value = float(s.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# After the number only words (units) and punctuation may follow; anything with digits,
# operators or LaTeX ("2x + 3", "2\\pi", "3^2") is an expression, not a number.
_TAIL_OK_RE = re.compile(r"^\s*(?:[A-Za-z][A-Za-z\s.'/\-]*)?[\s.,;:!?)\]}]*$")


def parse_number(s: str) -> float | None:
    """Read a single numeric value from an answer string, or None if it is not one number."""
    if not isinstance(s, str):
        return None
    s = _clean(s)
    if "=" in s:
        # "x = 5" states the value on the right.
        s = s.rsplit("=", 1)[1].strip()
    s = s.lstrip("{(").strip()
    if not s:
        return None

    sign = 1.0
    if s.startswith("-\\frac"):
        sign, s = -1.0, s[1:]
    m = _FRAC_RE.match(s)
    if m:
        num, den = parse_number(m.group(1)), parse_number(m.group(2))
        tail = s[m.end() :]
        if num is None or den is None or den == 0 or not _TAIL_OK_RE.match(tail):
            return None
        return sign * num / den

    m = re.match(rf"({_NUMBER})\s*/\s*({_NUMBER})", s)
    if m:
        num, den = _to_float(m.group(1)), _to_float(m.group(2))
        if num is None or den is None or den == 0 or not _TAIL_OK_RE.match(s[m.end() :]):
            return None
        return num / den

    m = _NUMBER_RE.match(s)
    if not m:
        return None
    tail = s[m.end() :]
    # Percent keeps its face value: "50%" answers "what percent", so it should equal "50".
    tail = tail[1:] if tail.startswith("%") else tail
    if not _TAIL_OK_RE.match(tail):
        return None
    return _to_float(m.group(0))


def _normalize_text(s: str) -> str:
    s = _clean(s).lower()
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def answers_match(
    candidate: str | None, reference: str, rel_tol: float = 1e-6, abs_tol: float = 1e-6
) -> bool:
    """Numeric comparison with tolerance when both sides are numbers, else normalized text."""
    if candidate is None or reference is None:
        return False
    cand_num, ref_num = parse_number(candidate), parse_number(reference)
    if cand_num is not None and ref_num is not None:
        return math.isclose(cand_num, ref_num, rel_tol=rel_tol, abs_tol=abs_tol)
    cand_txt, ref_txt = _normalize_text(candidate), _normalize_text(reference)
    return bool(ref_txt) and cand_txt == ref_txt


def _reference_answer(reference: str) -> str:
    # Datasets often store the full worked solution (GSM8K "... #### 72", MATH "\boxed{..}");
    # compare against its final answer, not the whole text.
    ref = reference.strip()
    if "####" in ref or "\\boxed" in ref or "\\fbox" in ref:
        return extract_final_answer(ref) or ref
    return ref


def _short(s: str, limit: int = 80) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def verify_math(
    response_text: str,
    reference: str | None,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-6,
) -> tuple[float | None, str]:
    """Score 1.0/0.0 by the response's final answer; None when there is no reference."""
    if reference is None or not str(reference).strip():
        return None, "no reference"
    ref = _reference_answer(str(reference))
    extracted = extract_final_answer(response_text)
    if extracted is None:
        return 0.0, "no final answer found"
    ok = answers_match(extracted, ref, rel_tol=rel_tol, abs_tol=abs_tol)
    verdict = "match" if ok else "mismatch"
    return (
        1.0 if ok else 0.0
    ), f"extracted {_short(extracted)}, reference {_short(ref)}: {verdict}"
