"""The bad-judge-reply corpus (tests/fixtures/bad_judge_replies/replies.yaml) through parse_rating.

A judge's reply is untrusted text: empty, cut off, out of range, self-contradicting, in words,
or enormous. parse_rating must return the score it can trust or None, never raise, never
return a number outside the rubric's scale, and stay fast on degenerate input. Cases the
parser gets wrong today carry a `bug` note and run as xfail(strict=True).

    .venv/bin/python -m pytest tests/judges/test_bad_judge_replies.py -q
"""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import ROOT

from prefgen.judges.parsing import parse_rating

CORPUS = ROOT / "tests" / "fixtures" / "bad_judge_replies" / "replies.yaml"
CASES = yaml.safe_load(CORPUS.read_text())


def reply_text(reply) -> str:
    """A string, or parts joined where {$text: S, times: N} is S * N."""
    if isinstance(reply, str):
        return reply
    return "".join(p if isinstance(p, str) else p["$text"] * p["times"] for p in reply)


def _param(case: dict):
    marks = [pytest.mark.xfail(strict=True, reason=case["bug"])] if case.get("bug") else []
    return pytest.param(case, id=case["name"], marks=marks)


def test_corpus_is_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) <= {"name", "reply", "scale", "expect", "bug", "max_seconds"}, case
        assert "expect" in case, case["name"]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_reply(case):
    low, high = case.get("scale", [1, 10])
    text = reply_text(case["reply"])
    # CPU time of this process, not wall time: a hang guard (backtracking blows up by orders
    # of magnitude) that other work on a busy CI machine cannot trip
    started = time.process_time()
    score = parse_rating(text, (low, high))
    elapsed = time.process_time() - started
    assert score is None or (isinstance(score, float) and low <= score <= high), score
    assert score == case["expect"], f"{case['name']}: got {score!r}"
    assert elapsed < case.get("max_seconds", 1.0), f"{elapsed:.2f} CPU s for {len(text)} chars"
