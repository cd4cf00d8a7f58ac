"""Overall-score aggregation across scorers with different native scales."""

from __future__ import annotations

import pytest

from prefgen.judges.aggregate import overall_score, rescale

SCALES = {"math": (0.0, 1.0), "coig_p": (1.0, 10.0), "helpfulness": (1.0, 5.0)}


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (0.0, (0, 1), (1, 10), 1.0),
        (1.0, (0, 1), (1, 10), 10.0),
        (3.0, (1, 5), (1, 10), 5.5),
        (5.5, (1, 10), (1, 5), 3.0),
        (7.0, (1, 10), (1, 10), 7.0),
    ],
)
def test_rescale(value, source, target, expected):
    assert rescale(value, source, target) == pytest.approx(expected)


def test_rescale_degenerate_source():
    with pytest.raises(ValueError):
        rescale(1.0, (2, 2), (1, 10))


def test_weighted_mean_on_common_scale():
    scores = {"math": 1.0, "coig_p": 4.0}
    got = overall_score(scores, {"math": 3.0, "coig_p": 1.0}, SCALES)
    assert got == pytest.approx((3 * 10.0 + 1 * 4.0) / 4)


def test_missing_scores_renormalize_weights():
    # No reference -> verifier None; the judge alone decides.
    got = overall_score({"math": None, "coig_p": 6.0}, {"math": 3.0, "coig_p": 1.0}, SCALES)
    assert got == pytest.approx(6.0)


def test_zero_weight_and_unweighted_scores_ignored():
    scores = {"math": 0.0, "coig_p": 8.0, "helpfulness": 1.0}
    assert overall_score(scores, {"math": 0.0, "coig_p": 1.0}, SCALES) == pytest.approx(8.0)


def test_target_scale():
    got = overall_score({"helpfulness": 5.0}, {"helpfulness": 1.0}, SCALES, target=(0.0, 1.0))
    assert got == pytest.approx(1.0)


@pytest.mark.parametrize(
    "scores", [{}, {"math": None}, {"coig_p": float("nan")}, {"helpfulness": 3.0}]
)
def test_none_when_nothing_weighted_present(scores):
    assert overall_score(scores, {"math": 1.0, "coig_p": 1.0}, SCALES) is None


def test_missing_scale_and_negative_weight_raise():
    with pytest.raises(ValueError, match="mystery"):
        overall_score({"mystery": 1.0}, {"mystery": 1.0}, SCALES)
    with pytest.raises(ValueError, match="coig_p"):
        overall_score({"coig_p": 1.0}, {"coig_p": -1.0}, SCALES)
