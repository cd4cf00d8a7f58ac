"""Combine per-scorer scores into one ``overall`` score on a common scale.

Scorers have different native scales (math verifier 0/1, COIG-P 1-10, UltraFeedback 1-5),
while pairing uses one margin (default 2 on 1-10), so every score is mapped linearly onto a
shared target scale before the weighted mean.
"""

from __future__ import annotations

import math

__all__ = ["overall_score", "rescale"]


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
