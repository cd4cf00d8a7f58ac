"""Generation: the models that answer, their shared sampling defaults and the techniques."""

from __future__ import annotations

from pydantic import Field, model_validator

from prefgen.config.base import MAX_TOKENS, Invalid, Section
from prefgen.config.models import ModelConfig


class GenerateConfig(Section):
    models: list[ModelConfig] = Field(default_factory=list)
    max_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=0.8, ge=0, le=5)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1_000_000, description="0 = off.")
    seed: int = Field(default=0, description="Sampling is seeded per (prompt, model, sample).")
    models_per_prompt: int | None = Field(
        default=None,
        ge=1,
        description="Each prompt goes to k of the N models (UltraFeedback: 4 of 17), chosen "
        "per prompt from its id and generate.seed; recorded as meta.assigned_models. A pool "
        "calls its engine only for its prompts, with batches widened by N/k. None: every "
        "model answers every prompt.",
    )
    principles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Principle -> system prompts (UltraFeedback). Each call draws a principle "
        "by weight, then one of its prompts, seeded by (prompt, model, sample); recorded as "
        "`principle`. Models with their own system_prompt keep it. Empty: off.",
    )
    principle_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Principle -> relative weight, unlisted ones 0; empty: equal.",
    )
    principle_weights_by_domain: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Domain -> principle weights for prompts of that domain.",
    )

    def resolved(self, model: ModelConfig) -> ModelConfig:
        """`model` with its unset sampling fields filled from these defaults."""
        return model.with_defaults(self.max_tokens, self.temperature, self.top_p, self.top_k)

    @model_validator(mode="after")
    def _techniques(self) -> GenerateConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise Invalid("models", f"model names must be unique, got {names}")
        k = self.models_per_prompt
        if k is not None and self.models and k > len(self.models):
            raise Invalid("models_per_prompt", f"must be between 1 and {len(self.models)} (models)")
        for name, prompts in self.principles.items():
            if not name.strip() or not prompts or not all(str(p).strip() for p in prompts):
                raise Invalid(f"principles.{name}", "needs a name and non-empty system prompts")
        weight_maps = {"principle_weights": self.principle_weights}
        for domain, weights in self.principle_weights_by_domain.items():
            weight_maps[f"principle_weights_by_domain.{domain}"] = weights
        for key, weights in weight_maps.items():
            for name, weight in weights.items():
                if name not in self.principles:
                    known = ", ".join(self.principles) or "none defined"
                    raise Invalid(f"{key}.{name}", f"not in generate.principles ({known})")
                if weight < 0:
                    raise Invalid(f"{key}.{name}", f"must be >= 0 (got {weight!r})")
            if weights and not sum(weights.values()) > 0:
                raise Invalid(key, "needs a weight > 0")
        if self.principles and self.models and all(m.system_prompt for m in self.models):
            raise Invalid("principles", "every model sets its own system_prompt, which wins")
        return self
