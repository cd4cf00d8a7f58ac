"""The whole pipeline config: input and output, the stage sections, execution and Ray."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prefgen.config.base import MAX_ACTORS, MAX_BATCH, MAX_CPUS, Invalid, Section
from prefgen.config.generate import GenerateConfig
from prefgen.config.ingest import IngestConfig, InputConfig
from prefgen.config.judge import JudgeConfig

# The pairing strategies (prefgen.pairing.strategies implements each; a test holds them equal).
Strategy = Literal["best_vs_worst", "best_vs_random", "random_with_margin", "all_pairs"]


class OutputConfig(Section):
    path: str = Field(min_length=1, description="Run directory: local path or s3://...")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    overwrite: bool = Field(default=False, description="Replace a committed run at the same path.")


class PairingConfig(Section):
    strategy: Strategy = "best_vs_worst"
    min_margin: float | None = Field(
        default=None, ge=0, description="Keep pairs with margin > this; None: strategy default."
    )
    min_chosen_score: float | None = None
    max_pairs_per_prompt: int | None = Field(default=None, ge=1, le=1_000_000)
    max_length_ratio: float | None = Field(
        default=None, ge=1, description="Drop pairs whose longer/shorter text exceeds this."
    )
    min_judge_agreement: float | None = Field(
        default=None, ge=0, le=1, description="Keep pairs at least this share of judges prefer."
    )
    domain_quotas: dict[str, int] = Field(
        default_factory=dict,
        description="Max pairs per domain across prompts: applied by `prefgen rebuild-pairs` "
        "(streaming pairing sees one prompt at a time).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _quotas(self) -> PairingConfig:
        for domain, quota in self.domain_quotas.items():
            if quota < 0:
                raise Invalid(f"domain_quotas.{domain}", f"must be >= 0 (got {quota})")
        return self


class RewardClientConfig(Section):
    """How a stage reaches a reward model: the endpoint over HTTP, or a local actor pool."""

    kind: Literal["none", "reward_model"] = "none"
    url: str | None = Field(
        default=None, description="Reward endpoint base URL (POST /v1/score); None: local pool."
    )
    model: str | None = Field(default=None, description="Reward model dir/URL for a local pool.")
    token_env: str | None = Field(
        default=None, description="Env var holding the endpoint's bearer token."
    )
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH)
    concurrency: int = Field(default=1, ge=1, le=MAX_ACTORS)
    num_cpus: float = Field(default=0.5, ge=0, le=MAX_CPUS)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_retries: int = Field(default=3, ge=0, le=100)

    @model_validator(mode="after")
    def _target(self) -> RewardClientConfig:
        if self.kind == "reward_model" and not (self.url or self.model):
            raise Invalid(
                "url", "kind reward_model needs url (the endpoint) or model (a local pool)"
            )
        return self


class FilterConfig(RewardClientConfig):
    """Optional online filter of pairs by a reward model (prefgen.pairing.reward_filter)."""

    min_margin: float = Field(default=0.0, description="Keep pairs with RM margin > this.")


class RouteConfig(RewardClientConfig):
    """Routing by confidence (prefgen.judges.route): a reward model scores every response
    first; a prompt whose best-worst reward gap is settled skips the LLM judges and is paired
    on the rewards, the uncertain rest goes to the judges as usual."""

    url: str | None = Field(
        default=None,
        description="Reward endpoint base URL (POST /v1/score); None: local pool. Not part of "
        "the run's identity: model_version says which model scored.",
        json_schema_extra={"identity": False},
    )
    band: float | None = Field(
        default=None,
        ge=0,
        description="Judge a prompt iff its best-worst reward gap is below this.",
    )
    judge_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Budget: judge at most this share of each shard (execution.shard_rows), "
        "the smallest gaps first; with a band, only prompts inside it. The phase ends after "
        "the route stage, so the driver decides each whole shard.",
    )
    model_version: str | None = Field(
        default=None,
        description="Which reward model scores (the endpoint's version), kept in the manifest.",
    )

    @model_validator(mode="after")
    def _rule(self) -> RouteConfig:
        if self.kind == "reward_model" and self.band is None and self.judge_share is None:
            raise Invalid("band", "routing needs route.band, route.judge_share or both")
        return self


class RayConfig(Section):
    address: str | None = Field(
        default=None,
        description="Cluster to join (ray://..., host:port, auto: the `ray start` one here); "
        "None: $RAY_ADDRESS, else a fresh local Ray of the run's own.",
    )
    num_cpus: int | None = Field(default=None, ge=1, le=100_000, description="Local Ray only.")


class ExecutionConfig(Section):
    """How the run is cut into resumable pieces and how much failure it tolerates."""

    mode: Literal["streaming", "phased"] = Field(
        default="streaming",
        description="streaming: every pool up at once | phased: one model pool at a time, "
        "intermediate rows persisted, for many models on few GPUs",
    )
    shard_rows: int = Field(
        default=64, ge=1, le=10_000_000, description="Prompts per shard: the unit of commit."
    )
    block_rows: int = Field(
        default=8,
        ge=1,
        le=1_000_000,
        description="Prompts per Ray Data block: blocks stream through the stages while a "
        "shard is assembled, so small runs overlap too.",
        json_schema_extra={"identity": False},
    )
    max_error_rate: float = Field(
        default=0.2, ge=0, le=1, description="Stop (resumably) past this share of errored rows."
    )
    min_rows_for_error_rate: int = Field(
        default=20, ge=0, description="Judge the error rate only after this many prompts."
    )
    max_restarts: int = Field(default=3, ge=0, le=1000, description="Restarts of a dead actor.")
    max_task_retries: int = Field(
        default=3, ge=0, le=1000, description="Retries of a batch whose actor died."
    )
    batch_retries: int = Field(
        default=2, ge=0, le=100, description="Retries of a batch whose engine raised."
    )


class PipelineConfig(Section):
    name: str = Field(default="prefgen", min_length=1)
    input: InputConfig
    output: OutputConfig = Field(json_schema_extra={"identity": False})
    limit: int | None = Field(default=None, ge=1, description="Only the first N prompt records.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    route: RouteConfig = Field(default_factory=RouteConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    ray: RayConfig = Field(default_factory=RayConfig, json_schema_extra={"identity": False})

    @model_validator(mode="after")
    def _across_sections(self) -> PipelineConfig:
        if not self.generate.models:
            raise Invalid("generate.models", "at least one model is required")
        if self.ingest.stratify_by and not self.input.sources:
            raise Invalid("ingest.stratify_by", "stratifies source quotas: set input.sources")
        if _inside(self.output.path, self.input.path):
            raise Invalid(
                "output.path",
                f"{self.output.path!r} is inside input.path {self.input.path!r}: the run would "
                "read its own output as prompts; choose an output outside the input",
            )
        return self


def _inside(output: str, input_path: str) -> bool:
    """True when `output` is `input_path` or below it (URLs compared as normalized text)."""

    def norm(url: str) -> str:
        import os.path
        import posixpath

        scheme, sep, rest = url.partition("://")
        if not sep or scheme == "file":
            return os.path.abspath(os.path.expanduser(rest if sep else url))
        return f"{scheme}://{posixpath.normpath(rest)}"

    out, inp = norm(output), norm(input_path.split("*")[0].rstrip("/") or input_path)
    return out == inp or out.startswith(inp.rstrip("/") + "/")
