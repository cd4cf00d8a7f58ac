"""Online filtering of pairs by a reward model (COIG-P's closing move: the RM replaces judges).

`filter.kind: reward_model` scores each pair's chosen and rejected response with a reward model
and keeps the pair iff r_chosen - r_rejected > filter.min_margin. The reward model is reached
over HTTP (`filter.url`: prefgen's Ray Serve endpoint, POST /v1/score) or, with no URL, loaded
into an in-pipeline actor pool from `filter.model`. Kept pairs carry the margin as `rm_margin`;
dropped pairs become rejects (stage `filter`, reason `rm_inverted` or `rm_below_min_margin`,
the pair itself as JSON in `raw`, so nothing is lost).

Input columns: prompt rows with `pairs`. Output: the same rows, `pairs` filtered, `dropped`
listing what was removed and why.
"""

from __future__ import annotations

from prefgen.data.rows import is_ok
from prefgen.reward.client import reward_client


def filter_decision(rm_margin: float, min_margin: float) -> str | None:
    """None to keep the pair, else why it goes (pure)."""
    if rm_margin <= 0:
        return "rm_inverted"
    if rm_margin <= min_margin:
        return "rm_below_min_margin"
    return None


def apply_filter(rows: list[dict], rewards: list[float], min_margin: float) -> None:
    """Split each row's pairs into kept (with rm_margin) and dropped, given rewards in
    (chosen, rejected) order for every pair of every ok row (pure)."""
    k = 0
    for row in rows:
        if not is_ok(row) or not row["pairs"]:
            continue
        kept = []
        for pair in row["pairs"]:
            margin = rewards[k] - rewards[k + 1]
            k += 2
            why = filter_decision(margin, min_margin)
            if why is None:
                kept.append({**pair, "rm_margin": margin})
            else:
                row.setdefault("dropped", []).append(
                    {
                        "pair_id": pair["id"],
                        "reason": f"{why} (rm margin {margin:.3f} <= {max(min_margin, 0.0):g})",
                        "pair": {**pair, "rm_margin": margin},  # kept whole in rejects/ (raw)
                    }
                )
        row["pairs"] = kept
        if not kept:
            row["reason"] = "all_pairs_filtered_by_reward_model"


def pair_items(rows: list[dict]) -> list[tuple[list[dict], str]]:
    """(prompt messages, response text) for each pair's chosen then rejected side."""
    items = []
    for row in rows:
        if is_ok(row):
            for pair in row["pairs"]:
                items.append((row["messages"], pair["chosen"][-1]["content"]))
                items.append((row["messages"], pair["rejected"][-1]["content"]))
    return items


class RewardFilterStage:
    """Row stage with its own client: one HTTP session or one loaded reward model per actor."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.client = reward_client(cfg)

    def __call__(self, rows: list[dict]) -> list[dict]:
        items = pair_items(rows)
        if items:
            apply_filter(rows, self.client.score(items), self.cfg.min_margin)
        return rows
