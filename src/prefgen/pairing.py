"""Turn one scored prompt row into chosen/rejected preference pairs.

Pure and deterministic so it can run inside any Ray map and be re-run to reproduce a
dataset. Strategies follow the source papers (RESEARCH.md §2.1 step 4, §2.2 step 6, §3D):

* ``best_vs_worst``: highest vs lowest ``overall``.
* ``best_vs_random``: UltraFeedback/Zephyr binarisation; best vs a random strictly worse one.
* ``random_with_margin``: COIG-P; random pairs kept when the score gap exceeds the margin
  (default 2.0 on the 1-10 scale), at most ``max_pairs_per_prompt`` (default 6).
* ``all_pairs``: every strictly ordered pair, largest margins first.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

__all__ = ["NO_PAIR_REASONS", "STRATEGIES", "build_pairs"]

STRATEGIES: tuple[str, ...] = ("best_vs_worst", "best_vs_random", "random_with_margin", "all_pairs")

# Why a prompt produced no pairs, checked in this order (the first that applies is reported):
# - fewer_than_two_scored_responses: < 2 responses have a non-None overall and non-empty text.
# - all_tied: every scorable response has the same overall score.
# - margin_below_threshold: no candidate pair's gap exceeds min_margin.
# - chosen_below_min_score: pairs cleared the margin but every chosen score < min_chosen_score.
NO_PAIR_REASONS: tuple[str, ...] = (
    "fewer_than_two_scored_responses",
    "all_tied",
    "margin_below_threshold",
    "chosen_below_min_score",
)

# Default margins per strategy: COIG-P found 2.0 best on 1-10; the others only need strict
# order, which min_margin=0.0 with a strict ">" gives.
_DEFAULT_MARGIN = {"random_with_margin": 2.0}
_DEFAULT_CAP = {"random_with_margin": 6}


def _sample_key(sample: Any) -> tuple[int, Any]:
    # Sort ints numerically and anything else (None, str) after them, without type errors.
    return (
        (0, sample)
        if isinstance(sample, int) and not isinstance(sample, bool)
        else (1, str(sample))
    )


def _scorable(responses: list[dict]) -> list[dict]:
    """Responses that may appear in a pair, in a canonical order independent of input order."""
    keep = []
    for idx, r in enumerate(responses or []):
        score = r.get("overall")
        text = r.get("text")
        if (
            score is None
            or isinstance(score, bool)
            or not isinstance(text, str)
            or not text.strip()
        ):
            continue
        try:
            score = float(score)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(score):
            continue
        keep.append((str(r.get("model")), _sample_key(r.get("sample")), idx, score, r))
    keep.sort(key=lambda t: t[:3])
    return [{**t[4], "overall": t[3]} for t in keep]


def _rng(seed: int, prompt_id: str) -> random.Random:
    # hash() is salted per process; sha256 keeps runs reproducible across workers.
    digest = hashlib.sha256(json.dumps([seed, prompt_id]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _pair_id(prompt_id: str, chosen: dict, rejected: dict) -> str:
    key = [
        prompt_id,
        chosen.get("model"),
        chosen.get("sample"),
        rejected.get("model"),
        rejected.get("sample"),
    ]
    return hashlib.sha256(json.dumps(key, default=str).encode("utf-8")).hexdigest()[:16]


def _orient(a: dict, b: dict) -> tuple[dict, dict]:
    return (a, b) if a["overall"] >= b["overall"] else (b, a)


def _make_pair(row: dict, chosen: dict, rejected: dict, strategy: str, judge: str) -> dict:
    prompt_id = str(row.get("id", ""))
    c_score, r_score = float(chosen["overall"]), float(rejected["overall"])
    return {
        "id": _pair_id(prompt_id, chosen, rejected),
        "prompt_id": prompt_id,
        "prompt": row.get("messages"),
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "chosen_score": c_score,
        "rejected_score": r_score,
        "margin": c_score - r_score,
        "chosen_model": chosen.get("model"),
        "rejected_model": rejected.get("model"),
        "domain": row.get("domain"),
        "judge": judge,
        "strategy": strategy,
        "meta": {
            "chosen_sample": chosen.get("sample"),
            "rejected_sample": rejected.get("sample"),
            "chosen_system_prompt": chosen.get("system_prompt"),
            "rejected_system_prompt": rejected.get("system_prompt"),
            "chosen_scores": dict(chosen.get("scores") or {}),
            "rejected_scores": dict(rejected.get("scores") or {}),
            "prompt_meta": dict(row.get("meta") or {}),
        },
    }


def build_pairs(
    row: dict,
    strategy: str,
    *,
    min_margin: float | None = None,
    min_chosen_score: float | None = None,
    max_pairs_per_prompt: int | None = None,
    seed: int = 0,
    judge: str = "",
) -> tuple[list[dict], str | None]:
    """Build preference pairs for one prompt row.

    Returns ``(pairs, None)`` when at least one pair is produced, else ``([], reason)`` with
    ``reason`` from ``NO_PAIR_REASONS`` so dropped prompts can be counted and explained.
    A pair is kept iff ``chosen_score - rejected_score > margin`` (strict, and never <= 0, so
    ties never pair) and ``chosen_score >= min_chosen_score`` when that is set.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    cap = max_pairs_per_prompt if max_pairs_per_prompt is not None else _DEFAULT_CAP.get(strategy)
    if cap is not None and cap < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1 or None, got {max_pairs_per_prompt!r}")
    margin = _DEFAULT_MARGIN.get(strategy, 0.0) if min_margin is None else float(min_margin)
    # A negative margin must not let ties through: pairs need a strict preference.
    margin = max(margin, 0.0)

    scored = _scorable(row.get("responses") or [])
    if len(scored) < 2:
        return [], "fewer_than_two_scored_responses"
    if len({r["overall"] for r in scored}) == 1:
        return [], "all_tied"

    def passes_margin(c: dict, r: dict) -> bool:
        return c["overall"] - r["overall"] > margin

    def passes_min(c: dict) -> bool:
        return min_chosen_score is None or c["overall"] >= min_chosen_score

    rng = _rng(seed, str(row.get("id", "")))
    selected: list[tuple[dict, dict]] = []
    any_margin_ok = False

    if strategy == "best_vs_worst":
        # max/min over the canonical order give a deterministic pick among equal scores.
        best = max(scored, key=lambda r: r["overall"])
        worst = min(scored, key=lambda r: r["overall"])
        if passes_margin(best, worst):
            any_margin_ok = True
            if passes_min(best):
                selected.append((best, worst))

    elif strategy == "best_vs_random":
        best = max(scored, key=lambda r: r["overall"])
        # Draw only among rejections that would survive the margin, so a valid pair is not
        # lost to an unlucky draw.
        pool = [r for r in scored if r is not best and passes_margin(best, r)]
        if pool:
            any_margin_ok = True
            if passes_min(best):
                selected.append((best, rng.choice(pool)))

    else:  # random_with_margin, all_pairs
        candidates = [
            _orient(scored[i], scored[j])
            for i in range(len(scored))
            for j in range(i + 1, len(scored))
        ]
        candidates = [(c, r) for c, r in candidates if passes_margin(c, r)]
        any_margin_ok = bool(candidates)
        candidates = [(c, r) for c, r in candidates if passes_min(c)]
        if strategy == "random_with_margin":
            # Shuffling unordered pairs == COIG-P's repeated random draws without duplicates.
            rng.shuffle(candidates)
        else:
            candidates.sort(
                key=lambda p: (-(p[0]["overall"] - p[1]["overall"]), _pair_id("", p[0], p[1]))
            )
        selected = candidates if cap is None else candidates[:cap]

    if not selected:
        return [], "chosen_below_min_score" if any_margin_ok else "margin_below_threshold"

    pairs: dict[str, dict] = {}
    for chosen, rejected in selected:
        pair = _make_pair(row, chosen, rejected, strategy, judge)
        # Duplicate (model, sample) keys in a row would collide on id; keep the first.
        pairs.setdefault(pair["id"], pair)
    return sorted(pairs.values(), key=lambda p: (-p["margin"], p["id"])), None


def pair_batch(
    batch,
    strategy: str,
    *,
    min_margin,
    min_chosen_score,
    max_pairs_per_prompt,
    seed: int,
    judge: str,
):
    """Ray Data stage: each ok row gains `pairs`; a row with none records its no-pair reason."""
    from prefgen.rows import decode_batch, encode_batch, is_ok

    rows = decode_batch(batch)
    for row in rows:
        if not is_ok(row):
            continue
        pairs, reason = build_pairs(
            row,
            strategy,
            min_margin=min_margin,
            min_chosen_score=min_chosen_score,
            max_pairs_per_prompt=max_pairs_per_prompt,
            seed=seed,
            judge=judge,
        )
        row["pairs"] = pairs
        row["reason"] = None if pairs else reason
    return encode_batch(rows)
