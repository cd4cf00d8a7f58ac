"""Listwise judging: seeded shuffle, parsing, mapping back; then the real model."""

from __future__ import annotations

import pytest
from judges.judge_rows import math_row

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.judges.listwise import (
    item_prefix,
    judge_listwise,
    parse_listwise,
    ranking_to_scores,
    render_listwise_messages,
    shuffle_order,
    unshuffle,
)
from prefgen.judges.parsing import weighted_score
from prefgen.judges.rubrics import get_rubric, score_labels
from prefgen.judges.shared import judge_targets, question_text

TEN = (1, 10)


def test_shuffle_is_a_seeded_permutation_and_unshuffle_inverts_it():
    order = shuffle_order(6, seed=3)
    assert sorted(order) == list(range(6)) and order == shuffle_order(6, seed=3)
    assert len({tuple(shuffle_order(6, seed=s)) for s in range(6)}) > 1
    shown = [f"item{k}" for k in order]  # what position k+1 displays
    assert unshuffle(shown, order) == [f"item{k}" for k in range(6)]


def test_render_lists_responses_in_shown_order_with_answer_lines():
    rubric = get_rubric("ultrafeedback")
    shown = ["SECOND {x}", "FIRST\n\n\n\nblank runs kept"]
    user = render_listwise_messages(rubric, "honesty", "Q?", shown, None, None)[1]["content"]
    assert user.index("[Response 1]") < user.index(shown[0]) < user.index("[Response 2]")
    assert user.index("[Response 2]") < user.index(shown[1])
    assert "Response 1: [n]\nResponse 2: [n]" in user and "1 to 5" in user
    assert "uncertain" in user.lower()  # the aspect's criteria
    assert item_prefix(2) == "Response 2: ["


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Good.\nResponse 1: [7]\nResponse 2: [3]", 2, [7.0, 3.0]),
        ("Response 2 is weak.\nResponse 1: 9\nResponse 2: **4**", 2, [9.0, 4.0]),
        # A ranking instead of scores, spread over the scale, best first.
        ("Ranking: 2 > 3 > 1", 3, [1.0, 10.0, 5.5]),
        ("Ranking: [3, 1, 2]", 3, [5.5, 1.0, 10.0]),
        # Partial or out-of-range answers are not guessed at.
        ("Response 1: [7]", 2, None),
        ("Response 1: [70]\nResponse 2: [3]", 2, None),
        ("Response 10: [4]", 1, None),
        ("nothing useful", 2, None),
        (None, 2, None),
    ],
)
def test_parse_listwise(text, n, expected):
    assert parse_listwise(text, n, TEN) == expected


def test_ranking_to_scores():
    assert ranking_to_scores([1], 2, (0, 4)) == [4.0, None]
    assert ranking_to_scores([2, 1, 2, 9], 2, (0, 4)) == [0.0, 4.0]


def test_stage_records_the_permutation_and_maps_scores_back(engine):
    judge = LLMJudgeConfig(name="lw", kind="listwise", model=ModelConfig(name="j", batch_size=4))
    rows = [math_row(), math_row("p2")]
    judge_listwise(rows, judge_targets(rows), judge, engine)
    rubric = get_rubric("coig_p")
    for row in rows:
        shown = next(r for r in row["judge_records"] if r["name"] == "lw")["permutation"]
        assert sorted(shown) == [0, 1, 2]
        # Recompute position by position from the recorded order: the score of the
        # response shown at position k must be the one the stage stored on it.
        conv = render_listwise_messages(
            rubric,
            "coig_p",
            question_text(row["messages"]),
            [row["responses"][j]["text"] for j in shown],
            row["domain"],
            row["reference"],
        )
        for position, j in enumerate(shown):
            probs = engine.label_probabilities(
                [conv], item_prefix(position + 1), score_labels(rubric)
            )
            assert row["responses"][j]["scores"]["lw"] == pytest.approx(weighted_score(probs[0]))
            assert row["responses"][j]["judge_status"]["lw"] == "ok"
