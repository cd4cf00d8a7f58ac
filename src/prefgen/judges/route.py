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

The rule is per prompt, so a resumed or re-sharded run routes every prompt the same way.
A judging budget ("judge at most 20 %") becomes a band in `prefgen loop`, which sets it to
that quantile of the gaps the new reward model gives the previous round's prompts. This is
how Skywork-Reward-V2 and Hybrid Preferences spend costly labels: only where the cheap scorer
is unsure. Input: prompt rows with `responses`. Output: the same rows with `route` set and
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


def decide(gaps: list[float | None], band: float) -> list[str]:
    """Who labels each prompt, from its reward gap (pure): the reward model where the gap is
    at least `band`; the judges where it is smaller, or None (fewer than two responses the
    reward model could score: nothing else could pair the prompt)."""
    return [BY_REWARD if g is not None and g >= band else BY_JUDGES for g in gaps]


def apply_route(rows: list[dict], rewards: list[float], band: float) -> None:
    """Write the rewards (in `route_items` order) into the responses and decide each row."""
    k = 0
    ok = [row for row in rows if is_ok(row)]
    for row in ok:
        for response in row["responses"]:
            if routable(response):
                response["scores"][SCORE_NAME] = float(rewards[k])
                response["judge_status"][SCORE_NAME] = "ok"
                k += 1
    for row, route in zip(ok, decide([reward_gap(r) for r in ok], band), strict=True):
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
        apply_route(rows, rewards, self.cfg.band)
        return rows
