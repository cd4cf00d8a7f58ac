"""Scoring: LLM judges of every kind, rubrics defined in YAML, verifiers, the ensemble, weights.

What needs the judges' own knowledge (does a rubric exist, which score names does a judge
write) is checked by `prefgen.judges.checks` when the pipeline config is loaded; this module
holds the types and the checks that need nothing but the config itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prefgen.config.base import MAX_TOKENS, Invalid, Section
from prefgen.config.models import ModelConfig

JudgeKind = Literal["pointwise", "pairwise", "listwise", "cdr"]


class RubricConfig(Section):
    """A rubric defined in the YAML (`judge.rubrics.NAME`), built by prefgen.judges.custom_rubrics.

    None means "not given": the base's value, or the default where the rubric has no base.
    """

    base: str | None = Field(
        default=None, description="A built-in rubric to start from; given fields replace its own."
    )
    aspects: list[str] | None = Field(
        default=None, description="Scores per response (one: NAME; several: NAME.aspect)."
    )
    scale: list[int] | None = Field(default=None, description="[low, high], whole numbers 0-100.")
    system: str | None = Field(default=None, description="The judge's system prompt.")
    template: str | None = Field(
        default=None,
        description="str.format template: {question} {response} {reference_block} {aspect} "
        "{criteria} {domain_rule} {low} {high} {prefix}.",
    )
    domain_rules: dict[str, str] | None = Field(
        default=None, description="Domain -> {domain_rule} text; 'default' for other domains."
    )
    aspect_criteria: dict[str, str] | None = Field(
        default=None, description="Aspect -> {criteria} text."
    )
    prefix: str | None = Field(
        default=None, description="Text right before the score digits, e.g. 'Score: ['."
    )
    verifier_caps: dict[str, float] | None = Field(
        default=None, description="Aspect -> highest score when the verifier marks it wrong."
    )


class LLMJudgeConfig(Section):
    name: str = Field(min_length=1, description="Score name (multi-aspect rubrics: NAME.aspect).")
    rubric: str = Field(
        default="coig_p",
        description="A built-in rubric (prefgen.judges.rubrics) or a judge.rubrics one.",
    )
    mode: Literal["probability", "generate", "both"] = "probability"
    max_retries: int = Field(default=2, ge=0, le=20, description="Re-asks after a bad reply.")
    max_tokens: int = Field(
        default=256, ge=1, le=MAX_TOKENS, description="Tokens for the analysis (generate mode)."
    )
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="judge"))
    kind: JudgeKind = Field(default="pointwise", description="prefgen.judges.<kind>.")
    rubric_by_domain: dict[str, str] = Field(
        default_factory=dict,
        description="Domain -> rubric; other domains use `rubric`. Same scores and scale.",
    )
    max_comparisons: int | None = Field(
        default=None, ge=1, description="pairwise: most response pairs per prompt."
    )
    seed: int = Field(default=0, description="Seeds pairwise pair choice and listwise shuffle.")
    exclude_self: bool = Field(
        default=False, description="Do not score responses of this judge's model (or same_as)."
    )
    same_as: list[str] = Field(
        default_factory=list, description="Generator model names that share this judge's weights."
    )
    weak_model: ModelConfig | None = Field(
        default=None, description="cdr: the weak model; None: the judge's model, no criteria."
    )
    criteria: str | None = Field(
        default=None, description="cdr: strong model's system prompt; None: the default."
    )
    criteria_by_domain: dict[str, str] = Field(
        default_factory=dict, description="cdr: domain -> criteria, else `criteria`."
    )
    cdr_range: list[float] = Field(
        default_factory=lambda: [-10.0, 10.0],
        description="cdr: log-ratio range (nats) mapped onto 1-10 for `overall`.",
    )
    rubric_specs: dict[str, RubricConfig] = Field(
        default_factory=dict,
        description="Filled on load: the judge.rubrics definitions this judge uses, so they "
        "reach its Ray actors. Define rubrics under judge.rubrics, not here.",
    )

    @field_validator("cdr_range")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not value[0] < value[1]:
            raise ValueError(f"must be [low, high] with low < high, got {value}")
        return value

    @model_validator(mode="after")
    def _engines(self) -> LLMJudgeConfig:
        if self.kind == "cdr":  # teacher-forced response log-probs
            for key, model in (("model", self.model), ("weak_model", self.weak_model)):
                if model is not None and model.engine not in ("transformers", "vllm", "echo"):
                    raise Invalid(
                        f"{key}.engine",
                        "cdr needs response log-probabilities: transformers or vllm",
                    )
        return self


class MathVerifierConfig(Section):
    enabled: bool = True
    name: str = Field(default="math", min_length=1)
    domains: list[str] = Field(default_factory=lambda: ["math"])
    rel_tol: float = Field(default=1e-6, ge=0, le=1)
    abs_tol: float = Field(default=1e-6, ge=0)


class CodeVerifierConfig(Section):
    """Run each code response against the prompt's unit tests in the sandbox (PLUM style)."""

    enabled: bool = False
    name: str = Field(default="tests", min_length=1)
    domains: list[str] = Field(default_factory=lambda: ["code"])
    tests_field: str = Field(default="tests", description="Prompt record field holding the tests.")
    wall_s: float = Field(default=10.0, gt=0, le=3600, description="Wall-clock limit per run.")
    cpu_s: int = Field(default=5, ge=1, le=3600, description="CPU-time limit per run.")
    memory_mb: int = Field(default=512, ge=1, le=1_048_576, description="Memory limit per run.")
    max_processes: int = Field(default=32, ge=1, le=4096, description="Process-count limit.")
    max_file_mb: int = Field(default=16, ge=1, le=1_048_576, description="Largest file written.")
    workdir_mb: int = Field(
        default=64, ge=1, le=1_048_576, description="tmpfs size of the run's work dir."
    )
    max_parallel: int = Field(default=4, ge=1, le=1024, description="Sandboxes at once per batch.")


class EnsembleConfig(Section):
    """Several judges' scores combined into one (each member's score is kept too)."""

    name: str = Field(default="ensemble", min_length=1, description="Score name of the aggregate.")
    members: list[str] = Field(
        default_factory=list, description="Score names to combine; empty: no ensemble."
    )
    aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim: float = Field(
        default=0.1, ge=0, lt=0.5, description="trimmed_mean: share cut from each end."
    )

    @model_validator(mode="after")
    def _two_members(self) -> EnsembleConfig:
        if self.members and len(set(self.members)) < 2:
            raise Invalid("members", "an ensemble needs at least two different scores")
        return self


class JudgeConfig(Section):
    llm: list[LLMJudgeConfig] = Field(default_factory=list)
    rubrics: dict[str, RubricConfig] = Field(
        default_factory=dict,
        description="Rubrics by name, usable as judge.llm[].rubric (docs/judges.md).",
    )
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    math_verifier: MathVerifierConfig = Field(default_factory=MathVerifierConfig)
    code_verifier: CodeVerifierConfig = Field(default_factory=CodeVerifierConfig)
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Score name -> weight for `overall` (each rescaled to 1-10). Empty: equal.",
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0 (got {weight!r})")
        return weights

    @model_validator(mode="after")
    def _attach_rubric_specs(self) -> JudgeConfig:
        """Give each judge the judge.rubrics definitions it names.

        Judge stages run in Ray actors that receive only their own LLMJudgeConfig, so a custom
        rubric travels on each judge that uses it rather than in a registry.
        """
        names = [j.name for j in self.llm]
        if len(set(names)) != len(names):
            raise Invalid("llm", f"judge names must be unique, got {names}")
        for i, judge in enumerate(self.llm):
            used = sorted({judge.rubric, *judge.rubric_by_domain.values()} & set(self.rubrics))
            specs = {name: self.rubrics[name] for name in used}
            if judge.rubric_specs and judge.rubric_specs != specs:  # equal: a reloaded config
                raise Invalid(f"llm.{i}.rubric_specs", "is filled on load; define judge.rubrics")
            if judge.rubric_specs != specs:
                judge.rubric_specs = specs
        return self
