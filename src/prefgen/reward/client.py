"""Clients of a reward model for pipeline stages: the endpoint over HTTP, or the model itself.

Both answer `score([(prompt messages, response text), ...]) -> [reward, ...]`; the filter and
the router (`prefgen.pairing.reward_filter`, `prefgen.judges.route`) hold one per actor.
"""

from __future__ import annotations

import os
import time

RETRY_STATUSES = (429, 502, 503, 504)


def reward_client(cfg):
    """The client a `RewardClientConfig` asks for: HTTP when it has a url, else a local model."""
    if cfg.url:
        return HttpRewardClient(
            cfg.url, cfg.token_env, cfg.batch_size, cfg.timeout_s, cfg.max_retries
        )
    return LocalRewardClient(cfg.model, cfg.batch_size)


class HttpRewardClient:
    """POST /v1/score with bounded retries on overload (503 + Retry-After) and timeouts."""

    def __init__(
        self, url: str, token_env: str | None, batch_size: int, timeout_s: float, max_retries: int
    ):
        import requests

        self.url = url.rstrip("/") + "/v1/score"
        self.session = requests.Session()
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise RuntimeError(f"token_env names {token_env}, which is not set")
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.batch_size, self.timeout_s, self.max_retries = batch_size, timeout_s, max_retries

    def score(self, items: list[tuple]) -> list[float]:
        rewards: list[float] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            payload = {"items": [{"prompt": p, "response": r} for p, r in chunk]}
            rewards.extend(self._post(payload)["rewards"])
        return rewards

    def _post(self, payload: dict) -> dict:
        import requests

        for attempt in range(self.max_retries + 1):
            try:
                resp = self.session.post(self.url, json=payload, timeout=self.timeout_s)
            except requests.RequestException:
                if attempt == self.max_retries:
                    raise
                time.sleep(min(2**attempt, 10))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(float(resp.headers.get("Retry-After", 2**attempt)))
                continue
            if resp.status_code != 200:
                raise RuntimeError(
                    f"reward endpoint {self.url} answered {resp.status_code}: {resp.text[:200]}"
                )
            return resp.json()
        raise RuntimeError("unreachable")


class LocalRewardClient:
    def __init__(self, model_url: str, batch_size: int):
        from prefgen.reward.model import load_reward_model

        self.model, self.tokenizer = load_reward_model(model_url)
        self.batch_size = batch_size

    def score(self, items: list[tuple]) -> list[float]:
        from prefgen.reward.model import score

        rewards, _ = score(
            self.model,
            self.tokenizer,
            [p for p, _ in items],
            [r for _, r in items],
            self.batch_size,
        )
        return rewards
