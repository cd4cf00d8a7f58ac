"""Math final-answer extraction and verification."""

from __future__ import annotations

import pytest

from prefgen.judges.math_verifier import (
    answers_match,
    extract_final_answer,
    parse_number,
    verify_math,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"So the result is \boxed{391}.", "391"),
        (r"First \boxed{12}, corrected: \boxed{\frac{3}{4}}", r"\frac{3}{4}"),
        (r"\boxed{\sqrt{2}+{1}}", r"\sqrt{2}+{1}"),
        ("Natalia sold 48/2 = 24 clips.\n48 + 24 = 72\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("The final answer is 42. Let me double-check: yes.", "42"),
        ("Thus, the answer is $\\frac{3}{4}$.", "$\\frac{3}{4}$"),
        ("Answer: B", "B"),
        # A bare "Answer:" that opens the working is not the answer.
        ("Answer: First we multiply.\n17 * 23 = 391", "391"),
        ("We add 3 apples and 4 apples to get 7 apples in total", "7"),
        (r"\boxed{unclosed but later 5", "5"),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "I do not know.", None])
def test_extract_final_answer_none(text):
    assert extract_final_answer(text) is None


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("42", 42.0),
        ("-7", -7.0),
        ("\u22127", -7.0),  # unicode minus sign
        ("3.25", 3.25),
        (".5", 0.5),
        ("1,234", 1234.0),
        ("1,234,567.5", 1234567.5),
        ("3/4", 0.75),
        (r"\frac{3}{4}", 0.75),
        (r"\dfrac{6}{8}", 0.75),
        (r"-\frac{1}{2}", -0.5),
        ("50%", 50.0),
        (r"50\%", 50.0),
        ("$42$", 42.0),
        (r"\$5.00", 5.0),
        ("42 apples.", 42.0),
        (r"12 \text{ cm}", 12.0),
        ("x = 5", 5.0),
        (r"90^\circ", 90.0),
    ],
)
def test_parse_number(s, expected):
    assert parse_number(s) == pytest.approx(expected)


@pytest.mark.parametrize("s", ["", "abc", "2x + 3", r"2\pi", "1,23", "3^2", r"\frac{1}{0}", "1/0"])
def test_parse_number_rejects_non_numbers(s):
    assert parse_number(s) is None


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        ("391", "391", True),
        ("391.0", "391", True),
        ("1,234", "1234", True),
        (r"\frac{3}{4}", "0.75", True),
        ("0.333", "1/3", False),  # beyond default tolerance
        ("0.33333333", "1/3", True),  # within abs_tol
        ("390", "391", False),
        ("-5", "5", False),
        ("B", "b", True),
        (r"$x^2 + 1$", "x^2+1.", True),
        (r"\sqrt{2}", r"\sqrt{3}", False),
        (None, "391", False),
    ],
)
def test_answers_match(candidate, reference, expected):
    assert answers_match(candidate, reference) is expected


def test_answers_match_tolerance_is_configurable():
    assert answers_match("0.3333", "1/3", rel_tol=1e-3)
    assert not answers_match("0.3333", "1/3")
    assert answers_match("100.4", "100", abs_tol=0.5)


def test_verify_math_match_and_rationale():
    score, why = verify_math(r"17 * 23 = 391, so \boxed{391}", "391")
    assert score == 1.0
    assert why == "extracted 391, reference 391: match"


def test_verify_math_mismatch():
    score, why = verify_math("The answer is 390.", "391")
    assert score == 0.0 and why.endswith("mismatch") and "390" in why


def test_verify_math_uses_final_answer_of_worked_reference():
    score, _ = verify_math("#### 72", "She sold 48 + 24 = 72 clips.\n#### 72")
    assert score == 1.0


@pytest.mark.parametrize("reference", [None, "", "  "])
def test_verify_math_without_reference(reference):
    assert verify_math("42", reference) == (None, "no reference")


def test_verify_math_no_answer():
    assert verify_math("I am not sure how to solve this.", "3") == (0.0, "no final answer found")
