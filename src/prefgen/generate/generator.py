"""Generation stage: one per configured model; models on the same weights share one pool.

Input columns: the prompt row (`id`, `messages`, `domain`, `status`, `responses`).
Output: the same rows with this model's responses appended to `responses` and, when
`generate.models_per_prompt` is set, `assigned_models`. Rejected rows pass through
untouched. Each response records the model name, sample index, text, finish reason, token count,
the system prompt used, the principle it was drawn from, the verbalized probability and its share
of the batch's wall time (for tokens/s).

Generation techniques, each a `generate` option that is off by default (docs/research.md: "UltraFeedback: prompts, models and principles" and "Verbalized Sampling: diversity from one call"):

* **Model subsets** (`generate.models_per_prompt: k`; UltraFeedback asks 4 of its 17 models):
  `assign_models` picks k of the N configured models per prompt by rendezvous hashing: each
  model gets a stable hash of (generate.seed, prompt id, model name) and the k highest win. It
  is deterministic, ignores the order of `generate.models`, gives each model k/N of the prompts
  in expectation (each prompt independently), and adding a model moves only the slots it wins.
* **Principles** (`generate.principles`, `principle_weights`, `principle_weights_by_domain`;
  UltraFeedback): each call draws a principle by weight, then one of its system prompts, both
  seeded by (generate.seed, prompt id, model, sample). System prompts rank: the prompt's own
  system message, then the model's `system_prompt`, then the drawn principle; a model with its
  own `system_prompt` is configured on purpose (a persona, a required format) and keeps it.
  `principle` is recorded only when its system prompt was actually sent, else None.
* **Several samples** (`samples_per_prompt`): one call per sample, each seeded apart, so the
  transformers engine's per-row sampling (and servers that honour `seed`) give different texts.
* **Verbalized Sampling** (`ModelConfig.verbalized_k: k`): one call asks for k responses with
  probabilities (prefgen.generate.verbalized); call c gives samples c*k .. c*k+k-1 with
  `verbalized_probability`, and unparseable ones become error responses, so each call always
  accounts for k responses.

Pool capacity with `models_per_prompt` (k of N): Ray Data sends every row through every model's
stage; a stage calls its engine only for the prompts assigned to it, so unassigned rows cost
no engine time. So that an engine call still holds about `batch_size` prompts, a pool's Ray Data
batches are widened to batch_size * N / k rows (`pool_model`). Each model then answers about k/N
of the prompts, so it needs about k/N of the actors (`concurrency`) it would need to answer all
of them: weight `concurrency` by that share (and by the model's speed) rather than sizing every
pool for the whole input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from prefgen.config import GenerateConfig, ModelConfig
from prefgen.data.rows import is_ok, reject, stable_hash, stable_seed
from prefgen.engines import Completion, GenerationRequest
from prefgen.engines.base import TEMPLATE_ERROR
from prefgen.generate.verbalized import split_verbalized, with_verbalized_instruction

_UNIT = 16**15  # stable_seed is 15 hex digits: stable_seed(...) / _UNIT is uniform on [0, 1)


@dataclass(frozen=True)
class PlannedCall:
    """One engine call: its row in the batch, its sample index (call index when verbalized),
    the request and the principle whose system prompt it carries (None: no principle)."""

    row: int
    call: int
    request: GenerationRequest
    principle: str | None


def assign_models(prompt_id: str, model_names: list[str], k: int | None, seed: int) -> list[str]:
    """The k models that answer this prompt, in config order (all of them when k is None or >= N).

    Rendezvous hashing: every model gets the hash of (seed, prompt id, name) and the k highest
    win, so the choice is deterministic, independent of the list's order, and balanced in
    expectation (each model is chosen for k/N of the prompts).
    """
    if k is None or k >= len(model_names):
        return list(model_names)
    ranked = sorted(model_names, key=lambda name: stable_hash(seed, prompt_id, name), reverse=True)
    chosen = set(ranked[:k])
    return [name for name in model_names if name in chosen]


def principle_weights(generate: GenerateConfig, domain: str | None) -> dict[str, float]:
    """The weights for a prompt of this domain: per-domain, else generate-wide, else equal."""
    if domain is not None and domain in generate.principle_weights_by_domain:
        return dict(generate.principle_weights_by_domain[domain])
    if generate.principle_weights:
        return dict(generate.principle_weights)
    return {name: 1.0 for name in generate.principles}


def draw_principle(
    principles: dict[str, list[str]],
    weights: dict[str, float],
    prompt_id: str,
    model_name: str,
    sample: int,
    seed: int,
) -> tuple[str, str] | None:
    """(principle, system prompt) for one call, or None when no principle has weight.

    Deterministic in (seed, prompt id, model, sample); principles are laid out in name order so
    the draw does not depend on the order of the config's keys.
    """
    names = [name for name in sorted(principles) if weights.get(name, 0.0) > 0 and principles[name]]
    if not names:
        return None
    total = sum(weights[name] for name in names)
    target = stable_seed(seed, prompt_id, model_name, sample, "principle") / _UNIT * total
    chosen = names[-1]  # float rounding at the top end
    for name in names:
        target -= weights[name]
        if target < 0:
            chosen = name
            break
    prompts = principles[chosen]
    index = stable_seed(seed, prompt_id, model_name, sample, "system_prompt", chosen) % len(prompts)
    return chosen, prompts[index]


def plan_calls(
    rows: list[dict], model: ModelConfig, seed: int, generate: GenerateConfig | None = None
) -> list[PlannedCall]:
    """Every engine call this model makes for a batch. Pure: tested directly.

    Skips rejected rows and, with `models_per_prompt`, rows not assigned to this model.
    """
    generate = generate or GenerateConfig(models=[model], seed=seed)
    names = [m.name for m in generate.models]
    calls = []
    for i, row in enumerate(rows):
        if not is_ok(row):
            continue
        k = generate.models_per_prompt
        if k is not None and model.name not in assign_models(row["id"], names, k, seed):
            continue
        own_system = bool(row["messages"]) and row["messages"][0]["role"] == "system"
        for sample in range(model.samples_per_prompt):
            principle, system_prompt = None, model.system_prompt
            if generate.principles and not model.system_prompt and not own_system:
                weights = principle_weights(generate, row.get("domain"))
                drawn = draw_principle(
                    generate.principles, weights, row["id"], model.name, sample, seed
                )
                if drawn is not None:
                    principle, system_prompt = drawn
            messages = with_system_prompt(row["messages"], system_prompt)
            if model.verbalized_k:
                messages = with_verbalized_instruction(messages, model.verbalized_k)
            request = GenerationRequest(
                messages=messages,
                max_tokens=model.max_tokens,
                temperature=model.temperature,
                top_p=model.top_p,
                top_k=model.top_k,
                seed=stable_seed(seed, row["id"], model.name, sample),
            )
            calls.append(PlannedCall(i, sample, request, principle))
    return calls


def build_requests(
    rows: list[dict], model: ModelConfig, seed: int, generate: GenerateConfig | None = None
) -> list[tuple[int, int, GenerationRequest]]:
    """(row index, sample index, request) per call: `plan_calls` without the principles (bench)."""
    return [(c.row, c.call, c.request) for c in plan_calls(rows, model, seed, generate)]


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The model's system prompt replaces none of the user's: it is added only if the prompt has none."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def pool_model(model: ModelConfig, generate: GenerateConfig) -> ModelConfig:
    """The config a model's pool is sized with: with k of N models per prompt, Ray Data batches
    of batch_size * N / k rows, so an engine call still holds about batch_size assigned prompts."""
    k, n = generate.models_per_prompt, len(generate.models)
    if not k or k >= n:
        return model
    return model.model_copy(update={"batch_size": math.ceil(model.batch_size * n / k)})


class GenerateStage:
    """Row stage: one model's responses for a batch of prompts, on the engine it is given.

    The engine is loaded by the pool that hosts the stage (one load per weight set, shared
    with every other model on the same weights); the stage only plans calls and records."""

    def __init__(self, model: ModelConfig, seed: int, generate: GenerateConfig | None, engine):
        self.model = model
        self.seed = seed
        self.generate = generate or GenerateConfig(models=[model], seed=seed)
        self.names = [m.name for m in self.generate.models]
        self.engine = engine

    def __call__(self, rows: list[dict]) -> list[dict]:
        if self.generate.models_per_prompt is not None:
            for row in rows:
                if is_ok(row) and self.model.name in (assigned := self._assigned(row["id"])):
                    row["assigned_models"] = assigned
        calls = plan_calls(rows, self.model, self.seed, self.generate)
        if calls:
            start = time.perf_counter()
            completions = self.engine.generate([c.request for c in calls])
            share = (time.perf_counter() - start) / len(calls)
            for call, completion in zip(calls, completions):
                if completion.finish_reason.startswith(TEMPLATE_ERROR):  # the row's own fault
                    reject(rows[call.row], "generate", completion.finish_reason)
                elif is_ok(rows[call.row]):
                    self._append(rows[call.row], call, completion, share)
        return rows

    def _assigned(self, prompt_id: str) -> list[str]:
        return assign_models(prompt_id, self.names, self.generate.models_per_prompt, self.seed)

    def _append(self, row: dict, call: PlannedCall, completion: Completion, share: float) -> None:
        k = self.model.verbalized_k
        pieces = split_verbalized(completion, k) if k else [(completion, None)]
        messages = call.request.messages
        for j, (piece, probability) in enumerate(pieces):
            row["responses"].append(
                {
                    "model": self.model.name,
                    "sample": call.call * len(pieces) + j,
                    "text": piece.text,
                    "finish_reason": piece.finish_reason,
                    "n_tokens": piece.n_tokens,
                    "prompt_tokens": piece.prompt_tokens or None,
                    "system_prompt": messages[0]["content"]
                    if messages[0]["role"] == "system"
                    else None,
                    "principle": call.principle,
                    "verbalized_probability": probability,
                    "gen_seconds": share / len(pieces),
                    "scores": {},
                    "rationales": {},
                    "judge_status": {},
                    "overall": None,
                }
            )
