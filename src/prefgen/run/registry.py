"""Every stage of the flow, listed in one place, and the pipeline config loader that checks them.

A `Stage` is the one contract every step of a run follows: its name, the config section it
reads, the models it needs (`ModelUse`: config key and `ModelConfig`), what else it holds
(`holds`: CPUs of a reward-model client), the batch size it wants, how its failures are
labelled, and `make(engines) -> step`, where a step is `rows -> rows` on plain row dicts
(`prefgen.data.rows`). A stage never loads a model itself: the pool that hosts it does, once
per weight set (`prefgen.run.pools`), and hands it the engines it named.

`STAGES` is the flow in order; `build_stages(cfg)` asks each entry for the stages this config
has. The pipeline, preflight (models and resources), the usage ledgers, the manifest's counts
and the config checks all read this list; none keeps its own. Adding a judge kind is one module
in `prefgen/judges/` plus one line in `prefgen.judges.llm_judge.KINDS`; adding a stage family
is one builder function here plus one line in `STAGES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from prefgen.config import ModelConfig, PipelineConfig, load
from prefgen.judges.checks import check_judges

Step = Callable[[list[dict]], list[dict]]


@dataclass(frozen=True)
class ModelUse:
    """One model a stage needs: where it is configured and what it is."""

    key: str  # config key, e.g. "generate.models.0" or "judge.llm.1.weak_model"
    model: ModelConfig


@dataclass(frozen=True)
class Holds:
    """Resources a stage reserves for something that is not an LLM engine (a reward-model
    client, an HTTP session pool): it then gets a pool of its own."""

    num_cpus: float
    num_gpus: float = 0.0
    concurrency: int = 1


@dataclass(frozen=True)
class Stage:
    name: str
    section: str  # the config section it reads
    make: Callable[[dict[str, Any]], Step]  # engines by ModelUse.key -> the row step
    models: tuple[ModelUse, ...] = ()
    holds: Holds | None = None
    batch_rows: int | None = None  # rows per Ray Data batch it asks for
    reject_as: str = "stage"  # `stage` of the rows it rejects when it keeps failing
    resilient: bool = True  # retry a failing batch, then row by row
    own_task_cpus: float | None = None  # a light stage that needs a task (and CPUs) of its own
    # A decision that needs a whole shard at once (a judging budget): its step and its phase
    # end after this stage, and the driver applies it to each complete shard before the commit.
    on_shard: Callable[[list[dict]], None] | None = None

    @property
    def heavy(self) -> bool:
        """Needs a pool (an actor holding engines or a client), not just a task."""
        return bool(self.models) or self.holds is not None


def _call(factory: Callable, *args, **kwargs) -> Callable[[dict[str, Any]], Step]:
    """`make` for a step that needs no engine: the same step whatever the pool holds."""
    return lambda engines: partial(factory, *args, **kwargs)


# -- the stage families, in the order a row meets them ---------------------------------------


def prompt_stages(cfg: PipelineConfig) -> list[Stage]:
    """LLM prompt-quality filter and domain tagger (quality first: rejected prompts cost no
    tagging or generation). The keyword tagger runs in ingest, on the driver."""
    from prefgen.ingest.prompt_stages import DomainTaggerStage, PromptQualityStage

    out = []
    quality, tagger = cfg.ingest.quality_filter, cfg.ingest.domain_tagger
    if quality.enabled:
        key = "ingest.quality_filter.model"
        out.append(
            Stage(
                "prompt-quality",
                "ingest.quality_filter",
                lambda engines, q=quality, k=key: PromptQualityStage(q, engines[k]),
                (ModelUse(key, quality.model),),
                batch_rows=quality.model.batch_size,
                reject_as="ingest",
            )
        )
    if tagger.enabled and tagger.model is not None:
        key = "ingest.domain_tagger.model"
        out.append(
            Stage(
                "tag-domain",
                "ingest.domain_tagger",
                lambda engines, t=tagger, k=key: DomainTaggerStage(t, engines[k]),
                (ModelUse(key, tagger.model),),
                batch_rows=tagger.model.batch_size,
                reject_as="ingest",
            )
        )
    return out


def generate_stages(cfg: PipelineConfig) -> list[Stage]:
    from prefgen.generate.generator import GenerateStage, pool_model

    out = []
    for i, configured in enumerate(cfg.generate.models):
        model = cfg.generate.resolved(configured)
        key = f"generate.models.{i}"
        out.append(
            Stage(
                f"generate-{model.name}",
                key,
                lambda engines, m=model, k=key: GenerateStage(
                    m, cfg.generate.seed, cfg.generate, engines[k]
                ),
                (ModelUse(key, model),),
                # k of N models per prompt: wider batches, so an engine call stays full
                batch_rows=pool_model(model, cfg.generate).batch_size,
                reject_as="generate",
            )
        )
    return out


def route_stages(cfg: PipelineConfig) -> list[Stage]:
    r = cfg.route
    if r.kind != "reward_model":
        return []
    from prefgen.judges.route import RouteStage, decide_rows

    # Over HTTP the router holds a session, not a model: a light stage, so it runs inside the
    # pool before it. A budget is spent per shard: the phase ends after the router.
    holds = None if r.url else Holds(num_cpus=r.num_cpus, concurrency=r.concurrency)
    budget = partial(decide_rows, band=r.band, judge_share=r.judge_share)
    return [
        Stage(
            "route",
            "route",
            lambda engines, rc=r: RouteStage(rc),
            holds=holds,
            reject_as="route",
            on_shard=budget if r.judge_share is not None else None,
        )
    ]


def judge_stages(cfg: PipelineConfig) -> list[Stage]:
    from prefgen.judges.llm_judge import JudgeStage

    out = []
    for i, judge in enumerate(cfg.judge.llm):
        key = f"judge.llm.{i}.model"
        uses = [ModelUse(key, judge.model)]
        weak_key = None
        if judge.kind == "cdr" and judge.weak_model is not None:
            weak_key = f"judge.llm.{i}.weak_model"
            uses.append(ModelUse(weak_key, judge.weak_model))
        out.append(
            Stage(
                f"judge-{judge.name}",
                f"judge.llm.{i}",
                lambda engines, j=judge, k=key, w=weak_key: JudgeStage(
                    j, engines[k], engines[w] if w else None
                ),
                tuple(uses),
                batch_rows=judge.model.batch_size,
                reject_as="judge",
            )
        )
    return out


def verify_stages(cfg: PipelineConfig) -> list[Stage]:
    code = cfg.judge.code_verifier
    if not code.enabled:
        return []
    from prefgen.judges.code_verifier import verify_rows

    # Sandboxes are processes: a task with a whole CPU, so they do not starve the models.
    return [
        Stage(
            "verify-code",
            "judge.code_verifier",
            _call(verify_rows, cfg=code),
            reject_as="judge",
            resilient=False,
            own_task_cpus=1.0,
        )
    ]


def score_stages(cfg: PipelineConfig) -> list[Stage]:
    from prefgen.judges.scoring import score_rows, scoring_options

    return [Stage("score", "judge", _call(score_rows, **scoring_options(cfg)), resilient=False)]


def pair_stages(cfg: PipelineConfig) -> list[Stage]:
    from prefgen.pairing.strategies import pair_rows

    p, code = cfg.pairing, cfg.judge.code_verifier
    judge_names = "+".join(
        [j.name for j in cfg.judge.llm]
        + ([cfg.judge.math_verifier.name] if cfg.judge.math_verifier.enabled else [])
        + ([code.name] if code.enabled else [])
    )
    step = _call(
        pair_rows,
        strategy=p.strategy,
        min_margin=p.min_margin,
        min_chosen_score=p.min_chosen_score,
        max_pairs_per_prompt=p.max_pairs_per_prompt,
        seed=p.seed,
        judge=judge_names,
        max_length_ratio=p.max_length_ratio,
        min_judge_agreement=p.min_judge_agreement,
        exclude_from_votes=(cfg.judge.ensemble.name,) if cfg.judge.ensemble.members else (),
    )
    return [Stage("pair", "pairing", step, resilient=False)]


def filter_stages(cfg: PipelineConfig) -> list[Stage]:
    f = cfg.filter
    if f.kind != "reward_model":
        return []
    from prefgen.pairing.reward_filter import RewardFilterStage

    return [
        Stage(
            "filter",
            "filter",
            lambda engines, fc=f: RewardFilterStage(fc),
            holds=Holds(num_cpus=f.num_cpus, concurrency=f.concurrency),
            batch_rows=f.batch_size,
            reject_as="filter",
        )
    ]


STAGES: tuple[Callable[[PipelineConfig], list[Stage]], ...] = (
    prompt_stages,
    generate_stages,
    route_stages,
    judge_stages,
    verify_stages,
    score_stages,
    pair_stages,
    filter_stages,
)


def build_stages(cfg: PipelineConfig) -> list[Stage]:
    """The stages of this config, in flow order."""
    return [stage for family in STAGES for stage in family(cfg)]


def model_uses(cfg: PipelineConfig) -> list[ModelUse]:
    """Every model the run loads or calls, with its config key (preflight, ledgers)."""
    return [use for stage in build_stages(cfg) for use in stage.models]


# -- loading a pipeline config ---------------------------------------------------------------

CHECKS = (check_judges,)


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """YAML pipeline config + `key=value` overrides -> a validated PipelineConfig: types and
    ranges (`prefgen.config`), then the stages' own checks, all before Ray starts."""
    return load(path, overrides, PipelineConfig, CHECKS)
