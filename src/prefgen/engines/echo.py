"""A benchmark engine: deterministic text at a configured speed, no model. Never a default.

`engine: echo` measures prefgen's orchestration (ingest, sharding, Ray Data, pools, commit) at
10k to 1M prompts on machines where a real model would take days. Every answer is a pure
function of the request (its messages and seed), so runs reproduce and resume exactly:

* `generate`: `max_tokens` words drawn from a small vocabulary by the request's seed,
  finish reason `length`; with `engine_kwargs.tokens_per_s` the call sleeps as long as a model
  of that speed would take for the batch (default 0: as fast as possible).
* `label_probabilities`: a distribution over the labels from a hash of the conversation.
* `response_logprobs`: minus the response's length in words, a stand-in log-probability.

Options (`engine_kwargs`): `tokens_per_s` (float, default 0 = no sleep), `seconds_per_call`
(a fixed cost per engine call, default 0).
"""

from __future__ import annotations

import hashlib
import time

from prefgen.engines.base import Completion, GenerationRequest

_WORDS = (
    "the answer is that we first note each part then combine them so the result holds "
    "because every step follows from the previous one and nothing else is needed here"
).split()


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode("utf-8")).digest()


class EchoEngine:
    def __init__(self, tokens_per_s: float = 0.0, seconds_per_call: float = 0.0):
        if tokens_per_s < 0 or seconds_per_call < 0:
            raise ValueError("echo engine: tokens_per_s and seconds_per_call must be >= 0")
        self.tokens_per_s = float(tokens_per_s)
        self.seconds_per_call = float(seconds_per_call)

    @classmethod
    def from_config(cls, model_cfg) -> EchoEngine:
        kw = dict(model_cfg.engine_kwargs or {})
        return cls(float(kw.get("tokens_per_s", 0.0)), float(kw.get("seconds_per_call", 0.0)))

    def _wait(self, tokens: int) -> None:
        delay = self.seconds_per_call + (tokens / self.tokens_per_s if self.tokens_per_s else 0.0)
        if delay > 0:
            time.sleep(delay)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        out = []
        for r in requests:
            digest = _digest(r.seed, [m["content"] for m in r.messages])
            words = [_WORDS[digest[i % len(digest)] % len(_WORDS)] for i in range(r.max_tokens)]
            prompt_tokens = sum(len(m["content"].split()) for m in r.messages)
            out.append(Completion(" ".join(words), "length", r.max_tokens, prompt_tokens))
        self._wait(sum(r.max_tokens for r in requests))
        return out

    def label_probabilities(
        self, conversations: list[list[dict]], assistant_prefix: str, labels: list[str]
    ) -> list[dict[str, float]]:
        out = []
        for conv in conversations:
            digest = _digest(assistant_prefix, [m["content"] for m in conv])
            weights = [1 + digest[i % len(digest)] for i in range(len(labels))]
            total = sum(weights)
            out.append({label: w / total for label, w in zip(labels, weights)})
        self._wait(len(conversations))
        return out

    def response_logprobs(
        self, conversations: list[list[dict]], responses: list[str]
    ) -> list[float | None]:
        self._wait(len(conversations))
        return [-float(len(text.split())) for text in responses]
