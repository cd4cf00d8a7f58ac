"""Generation engines behind one small interface.

An engine turns chat requests into completions and, for judges, gives the probability of each
score label after a fixed assistant prefix. `transformers` runs in-process (CPU or GPU); `vllm`
is not an in-process engine but a Ray Data processor (`prefgen.engines.vllm`) that the pipeline
splices in where a model says `engine: vllm`.
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
    if model_cfg.engine == "openai":
        from prefgen.engines.openai import OpenAIEngine

        return OpenAIEngine.from_config(model_cfg)
    raise ValueError(
        f"engine {model_cfg.engine!r} has no in-process implementation; "
        "vllm models run through prefgen.engines.vllm as a Ray Data processor"
    )
