"""Combine scores: ``overall`` across scorers, ensembles across judges, and their agreement.

Scorers have different native scales (math verifier 0/1, COIG-P 1-10, UltraFeedback 1-5),
while pairing uses one margin (default 2 on 1-10), so every score is mapped linearly onto a
shared target scale before it is combined.

COIG-P scores every response with 8 judges but does not say how it combines them (docs/research.md
"COIG-P: judging and pairing"); an ensemble keeps each judge's score and adds one aggregate (mean, median or trimmed
mean), and `judge_agreement` measures how far the judges agree on a prompt's ranking (Kendall
tau per judge pair, and the share of response pairs they order the same way), the signal
agreement filters (SCIR, Secrets of RLHF II) need.
"""

from __future__ import annotations

import math
import statistics
from itertools import combinations

__all__ = [
    "aggregate",
    "ensemble_score",
    "judge_agreement",
    "kendall_tau",
    "overall_score",
    "pair_order_agreement",
    "rescale",
    "trimmed_mean",
]


def rescale(value: float, source: tuple[float, float], target: tuple[float, float]) -> float:
    """Map ``value`` linearly from the ``source`` range onto the ``target`` range."""
    s_lo, s_hi = float(source[0]), float(source[1])
    t_lo, t_hi = float(target[0]), float(target[1])
    if s_hi == s_lo:
        raise ValueError(f"degenerate source scale {source!r}: low and high must differ")
    return t_lo + (float(value) - s_lo) * (t_hi - t_lo) / (s_hi - s_lo)


def overall_score(
    scores: dict[str, float | None],
    weights: dict[str, float],
    scales: dict[str, tuple[float, float]],
    target: tuple[float, float] = (1.0, 10.0),
) -> float | None:
    """Weighted mean of the present, weighted scores after rescaling each onto ``target``.

    Weights are renormalised over the scores actually present, so a missing scorer (e.g. no
    reference for the verifier, or an unparseable judge reply) does not drag the mean down.
    """
    total_w = 0.0
    acc = 0.0
    for name, weight in weights.items():
        w = float(weight)
        if w < 0 or not math.isfinite(w):
            raise ValueError(f"weight for score {name!r} must be finite and >= 0, got {weight!r}")
        if w == 0:
            continue
        value = scores.get(name)
        # NaN means "scorer ran but produced nothing usable": treat like missing.
        if value is None or not math.isfinite(float(value)):
            continue
        if name not in scales:
            raise ValueError(f"no scale configured for score {name!r}; scales: {sorted(scales)}")
        acc += w * rescale(float(value), scales[name], target)
        total_w += w
    if total_w == 0:
        return None
    return acc / total_w


def _present(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def trimmed_mean(values: list[float], trim: float) -> float:
    """Mean after cutting floor(trim * n) values from each end (trim in [0, 0.5))."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be >= 0 and < 0.5, got {trim!r}")
    ordered = sorted(values)
    cut = int(math.floor(trim * len(ordered)))
    kept = ordered[cut : len(ordered) - cut]
    return sum(kept) / len(kept)


def aggregate(values, method: str = "mean", trim: float = 0.1) -> float | None:
    """mean | median | trimmed_mean of the present (not None, finite) values; None if none."""
    present = _present(values)
    if not present:
        return None
    if method == "mean":
        return sum(present) / len(present)
    if method == "median":
        return float(statistics.median(present))
    if method == "trimmed_mean":
        return trimmed_mean(present, trim)
    raise ValueError(f"unknown aggregation {method!r}; use mean, median or trimmed_mean")


def ensemble_score(
    scores: dict[str, float | None],
    members: list[str],
    scales: dict[str, tuple[float, float]],
    method: str = "mean",
    trim: float = 0.1,
    target: tuple[float, float] = (1.0, 10.0),
) -> float | None:
    """Aggregate of the members' scores, each first rescaled onto ``target``.

    A member that did not score (skipped its own model's response, unparseable reply) is
    left out rather than counted as a low score.
    """
    rescaled = []
    for name in members:
        value = scores.get(name)
        if value is None or not math.isfinite(float(value)):
            continue
        rescaled.append(rescale(float(value), scales[name], target))
    return aggregate(rescaled, method, trim)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _complete_pairs(x: list, y: list) -> tuple[list[float], list[float]]:
    keep = [
        (float(a), float(b))
        for a, b in zip(x, y)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    return [a for a, _ in keep], [b for _, b in keep]


def kendall_tau(x: list[float | None], y: list[float | None]) -> float | None:
    """Kendall's tau-b between two judges' scores of the same responses.

    Items either judge left unscored are dropped; None when fewer than two remain or
    either judge gave them all the same score (no ranking to compare).
    """
    xs, ys = _complete_pairs(x, y)
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(xs)), 2):
        dx, dy = _sign(xs[i] - xs[j]), _sign(ys[i] - ys[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    n_x = concordant + discordant + ties_y  # pairs x orders strictly
    n_y = concordant + discordant + ties_x  # pairs y orders strictly
    if n_x == 0 or n_y == 0:
        return None
    return (concordant - discordant) / math.sqrt(n_x * n_y)


def pair_order_agreement(x: list[float | None], y: list[float | None]) -> float | None:
    """Share of response pairs both judges order strictly that they order the same way."""
    xs, ys = _complete_pairs(x, y)
    same = total = 0
    for i, j in combinations(range(len(xs)), 2):
        dx, dy = _sign(xs[i] - xs[j]), _sign(ys[i] - ys[j])
        if dx and dy:
            total += 1
            same += dx == dy
    return same / total if total else None


def judge_agreement(per_judge: dict[str, list[float | None]]) -> dict:
    """Agreement between judges over one prompt's responses (same order in every list).

    Returns Kendall tau and pair-order agreement for every judge pair ("a|b"), and their
    means over the pairs where they are defined (None when none is).
    """
    taus: dict[str, float | None] = {}
    orders: dict[str, float | None] = {}
    for a, b in combinations(sorted(per_judge), 2):
        taus[f"{a}|{b}"] = kendall_tau(per_judge[a], per_judge[b])
        orders[f"{a}|{b}"] = pair_order_agreement(per_judge[a], per_judge[b])
    return {
        "kendall_tau": taus,
        "pair_order_agreement": orders,
        "mean_kendall_tau": aggregate(taus.values()),
        "mean_pair_order_agreement": aggregate(orders.values()),
    }
