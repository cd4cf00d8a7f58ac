"""`prefgen loop`: rounds of pipeline run -> reward-model training -> endpoint -> routed run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prefgen.config.base import MAX_CPUS, Invalid, Section
from prefgen.config.pipeline import RayConfig


class LoopRoundConfig(Section):
    input: str = Field(min_length=1, description="This round's prompts (what input.path takes).")
    overrides: list[str] = Field(
        default_factory=list, description="Pipeline key=value overrides for this round only."
    )


class LoopRouteConfig(Section):
    """How later rounds spend the judges: on the prompts the reward model is least sure of."""

    judge_share: float | None = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Judging budget: at most this share of each shard goes to the LLM judges, "
        "the prompts with the smallest reward gaps.",
    )
    band: float | None = Field(
        default=None, ge=0, description="Judge only prompts whose reward gap is below this."
    )
    num_cpus: float = Field(default=0.1, ge=0, le=MAX_CPUS, description="The router's client.")

    @model_validator(mode="after")
    def _rule(self) -> LoopRouteConfig:
        if self.band is None and self.judge_share is None:
            raise Invalid("judge_share", "set route.judge_share (a budget) or route.band")
        return self


class LoopAuditConfig(Section):
    """A stratified, blinded sample of each round's judge-labelled pairs (the uncertain share
    once a reward model routes) for people to label; `prefgen audit merge` reads the labels."""

    per_domain: int = Field(
        default=0, ge=0, le=100_000, description="Pairs per domain per round; 0: no export."
    )
    format: Literal["label-studio", "argilla"] = "label-studio"
    seed: int = 0


class LoopServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8011, ge=1, le=65535)
    num_cpus: float = Field(default=0.25, ge=0, le=MAX_CPUS, description="Per replica.")
    num_threads: int = Field(default=1, ge=1, le=4096, description="Torch threads per replica.")


class LoopConfig(Section):
    name: str = "loop"
    output: str = Field(min_length=1, description="round-N/ runs, rm/round-N/ models, loop.json.")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    pipeline: str = Field(min_length=1, description="The pipeline config every round runs.")
    pipeline_overrides: list[str] = Field(default_factory=list)
    reward: str = Field(
        default="pipelines/reward.yaml", description="The train-rm config for every round."
    )
    reward_overrides: list[str] = Field(default_factory=list)
    continue_training: bool = Field(
        default=False,
        description="From round 2, start each reward model from the previous round's "
        "(train-rm init_from) instead of the bare backbone; it still trains on all pairs so far.",
    )
    seed_pairs: list[str] = Field(
        default_factory=list,
        description="Pairs in any TRL format added to every round's training data.",
    )
    rounds: list[LoopRoundConfig] = Field(min_length=1, max_length=1000)
    route: LoopRouteConfig = Field(default_factory=LoopRouteConfig)
    serve: LoopServeConfig = Field(default_factory=LoopServeConfig)
    audit: LoopAuditConfig = Field(default_factory=LoopAuditConfig)
    ray: RayConfig = Field(default_factory=RayConfig, json_schema_extra={"identity": False})
