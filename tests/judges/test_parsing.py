"""Judge-reply parsing: the final score must be read reliably or not at all."""

from __future__ import annotations

import pytest

from prefgen.judges.parsing import parse_rating, weighted_score

TEN = (1, 10)
FIVE = (1, 5)


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("The answer is correct and clear.\nScore: [8]", TEN, 8.0),
        ("Score: [10]", TEN, 10.0),
        ("Rating: [4]", FIVE, 4.0),
        ("Verdict [[7]]", TEN, 7.0),
        ("[ 6 ]", TEN, 6.0),
        ("[7/10]", TEN, 7.0),
        # Numbers in the analysis must not beat the bracketed score.
        ("It makes 3 errors in 2 steps and scores 9 on style.\nScore: [4]", TEN, 4.0),
        ("First draft [3] was revised; final [9]", TEN, 9.0),
        # Bands echoed from the rubric are not scores.
        ("This is in the [7-8] band. Score: [7]", TEN, 7.0),
        ("Score: 7", TEN, 7.0),
        ("Score: 7.", TEN, 7.0),
        ("Score: 7.5", TEN, 7.5),
        ("Rating: 4/5", FIVE, 4.0),
        ("I'd give it a score of 8 out of 10.", TEN, 8.0),
        ("**Score:** 6", TEN, 6.0),
        ("Overall I would rate it 9/10", TEN, 9.0),
        # Continuation after an assistant prefix "Score: [".
        ("7]", TEN, 7.0),
        ("5", FIVE, 5.0),
    ],
)
def test_parse_rating_accepts_common_forms(text, scale, expected):
    assert parse_rating(text, scale) == expected


@pytest.mark.parametrize(
    ("text", "scale"),
    [
        ("", TEN),
        ("   \n ", TEN),
        ("I cannot evaluate this response.", TEN),
        ("asdf qwer [x] ]]", TEN),
        ("Score: [15]", TEN),
        ("Score: [0]", TEN),
        ("Score: -1", TEN),
        ("Rating: [7]", FIVE),
        ("Rating: 8/10", FIVE),  # wrong-scale denominator: do not guess
        ("Score: 4/5", TEN),
        ("On a rating scale of 1 to 10, it is fine.", TEN),  # range, not a score
        ("The response has 3 mistakes.", TEN),  # analysis numbers alone are not a score
    ],
)
def test_parse_rating_rejects_out_of_range_and_garbage(text, scale):
    assert parse_rating(text, scale) is None


def test_out_of_range_bracket_falls_back_to_in_range_one():
    assert parse_rating("Score: [7]\n(on a scale where [11] is impossible)", TEN) == 7.0


@pytest.mark.parametrize("bad", [None, 7, b"Score: [7]", ["Score: [7]"]])
def test_parse_rating_never_raises_on_non_strings(bad):
    assert parse_rating(bad, TEN) is None


def test_weighted_score_renormalizes():
    assert weighted_score({"1": 0.1, "2": 0.1}) == pytest.approx(1.5)
    assert weighted_score({"7": 2.0, "9": 2.0}) == pytest.approx(8.0)
    assert weighted_score({"10": 0.25, "5": 0.75}) == pytest.approx(6.25)


def test_weighted_score_ignores_zero_and_bad_entries():
    assert weighted_score({"3": 1.0, "9": 0.0, "x": 5.0, "4": -1.0}) == pytest.approx(3.0)


@pytest.mark.parametrize("probs", [{}, {"1": 0.0, "2": 0.0}, {"x": 1.0}])
def test_weighted_score_none_without_mass(probs):
    assert weighted_score(probs) is None
