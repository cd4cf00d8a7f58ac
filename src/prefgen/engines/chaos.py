"""Fault injection around any in-process engine, for chaos tests and fire drills.

Configured per model as `engine_kwargs: {chaos: {...}}`:

* `crash_rate`: share of batches whose actor process dies (`os._exit`) on the first attempt;
* `raise_rate`: share of batches that raise on the first attempt;
* `poison`: a substring; any request whose prompt contains it raises, every time;
* `state_dir`: where "already failed once" markers live (shared by all actors of a node), so
  an injected crash or error happens once per batch and the retry goes through.

Which batches fail is decided by a stable hash of the batch's request seeds, so a run
reproduces its faults. Nothing here is on unless a config asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefgen.data.rows import stable_hash
from prefgen.engines.base import Completion, Engine, GenerationRequest


class InjectedFault(RuntimeError):
    pass


class ChaosEngine:
    def __init__(self, inner: Engine, chaos: dict):
        unknown = set(chaos) - {"crash_rate", "raise_rate", "poison", "state_dir"}
        if unknown:
            raise ValueError(f"engine_kwargs.chaos: unknown keys {sorted(unknown)}")
        self.inner = inner
        self.crash_rate = float(chaos.get("crash_rate", 0.0))
        self.raise_rate = float(chaos.get("raise_rate", 0.0))
        self.poison = chaos.get("poison")
        self.state_dir = Path(chaos.get("state_dir") or "/tmp/prefgen-chaos")
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _strike(self, key: list) -> None:
        digest = stable_hash(key)
        roll = int(digest[:8], 16) / 0xFFFFFFFF
        if roll >= self.crash_rate + self.raise_rate:
            return
        marker = self.state_dir / digest
        try:
            marker.touch(exist_ok=False)  # first attempt only: the retry must succeed
        except FileExistsError:
            return
        if roll < self.crash_rate:
            os._exit(17)  # the actor dies: Ray restarts it and retries the batch
        raise InjectedFault(f"injected fault for batch {digest}")

    def _check_poison(self, conversations: list[list[dict]]) -> None:
        if self.poison and any(self.poison in m["content"] for conv in conversations for m in conv):
            raise InjectedFault(f"poisoned prompt (contains {self.poison!r})")

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        self._check_poison([r.messages for r in requests])
        self._strike(["generate", [r.seed for r in requests]])
        return self.inner.generate(requests)

    def label_probabilities(self, conversations, assistant_prefix, labels):
        self._check_poison(conversations)
        self._strike(["label", stable_hash(conversations)])
        return self.inner.label_probabilities(conversations, assistant_prefix, labels)

    def response_logprobs(self, conversations, responses):
        self._check_poison(conversations)
        self._strike(["logprob", stable_hash(conversations, responses)])
        return self.inner.response_logprobs(conversations, responses)
