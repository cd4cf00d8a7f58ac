"""Routing by confidence: a reward model decides what is settled, the LLM judges the rest.

`route.kind: reward_model` puts this stage between generation and the judges. It scores
every response of a prompt with the reward model (`scores["reward_model"]`) and measures how
settled the prompt is by its best-worst reward gap:

* gap >= `route.band`: `route = "reward_model"`; the LLM
  judges skip the prompt, `overall` is the reward, and its pairs say `label_source:
  reward_model` with the gap in `rm_margin`;
* otherwise `route = "judges"`: judged as without routing; the reward stays beside the
  judges' scores (out of `overall` and out of the judge votes), so each pair's `rm_margin`
  shows whether the reward model and the judges agree where both scored.

A judging budget (`route.judge_share`: "judge at most 20 %") is spent per shard
(`execution.shard_rows` prompts, fixed by the plan), the smallest gaps first. The stage then
only scores; the driver decides each complete shard before it commits it (`Stage.on_shard`),
so a rerun routes every prompt the same way whatever the batching. Shards are contiguous runs
of the input, so input sorted by source spends the budget per source; shuffle it for one share
over the mix. A band alone is a
per-prompt rule and is decided in the stream. This is how Skywork-Reward-V2 and Hybrid
Preferences spend costly labels: only where the cheap scorer is unsure. Input: prompt rows
with `responses`. Output: the same rows with `route` set (by the driver, with a budget) and
the reward in each scored response's `scores`.
"""

from __future__ import annotations

import math

from prefgen.data.rows import is_ok
from prefgen.reward.client import reward_client

SCORE_NAME = "reward_model"  # the reward's key in responses' scores
BY_REWARD, BY_JUDGES = "reward_model", "judges"


def routable(response: dict) -> bool:
    return bool(response["text"].strip()) and not response["finish_reason"].startswith("error")


def reward_gap(row: dict) -> float | None:
    """Best minus worst reward of a row's scored responses; None with fewer than two."""
    rewards = [
        r["scores"][SCORE_NAME]
        for r in row["responses"]
        if SCORE_NAME in (r["scores"] or {}) and math.isfinite(r["scores"][SCORE_NAME])
    ]
    return max(rewards) - min(rewards) if len(rewards) >= 2 else None


def decide(
    gaps: list[float | None], band: float | None, judge_share: float | None = None
) -> list[str]:
    """Who labels each prompt of a batch, from its reward gap (pure).

    Judged: prompts the reward model cannot order (gap None: fewer than two responses it
    scored; nothing else could pair them), then those with a gap below `band`, or with
    `judge_share`, the smallest gaps up to that share of the batch (inside the band, if set).
    """
    order = sorted(range(len(gaps)), key=lambda i: (gaps[i] is not None, gaps[i] or 0.0, i))
    unorderable = [i for i in order if gaps[i] is None]
    unsure = [i for i in order if gaps[i] is not None and (band is None or gaps[i] < band)]
    if judge_share is not None:
        budget = math.floor(judge_share * len(gaps) + 1e-9)
        unsure = unsure[: max(0, budget - len(unorderable))]
    judged = set(unorderable + unsure)
    return [BY_JUDGES if i in judged else BY_REWARD for i in range(len(gaps))]


def write_rewards(rows: list[dict], rewards: list[float]) -> None:
    """Write the rewards (in `route_items` order) into the responses' scores."""
    k = 0
    for row in rows:
        if not is_ok(row):
            continue
        for response in row["responses"]:
            if routable(response):
                response["scores"][SCORE_NAME] = float(rewards[k])
                response["judge_status"][SCORE_NAME] = "ok"
                k += 1


def decide_rows(rows: list[dict], band: float | None, judge_share: float | None = None) -> None:
    """Set each ok row's `route` from its reward gap; `rows` is the set a budget is shared by."""
    ok = [row for row in rows if is_ok(row)]
    for row, route in zip(ok, decide([reward_gap(r) for r in ok], band, judge_share), strict=True):
        row["route"] = route


def route_items(rows: list[dict]) -> list[tuple[list[dict], str]]:
    """(prompt messages, response text) of every response worth scoring, row by row."""
    return [
        (row["messages"], response["text"])
        for row in rows
        if is_ok(row)
        for response in row["responses"]
        if routable(response)
    ]


class RouteStage:
    """Row stage with its own reward client (one HTTP session or one loaded model per actor)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.client = reward_client(cfg)

    def __call__(self, rows: list[dict]) -> list[dict]:
        items = route_items(rows)
        rewards = self.client.score(items) if items else []
        write_rewards(rows, rewards)
        if self.cfg.judge_share is None:  # a budget is decided per shard, on the driver
            decide_rows(rows, self.cfg.band)
        return rows
