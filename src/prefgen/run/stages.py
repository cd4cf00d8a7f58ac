"""The row stages of a pipeline, in order, each knowing how to attach itself to a Ray Data dataset.

`build_stages(cfg)` turns the config into a list of `Stage`s; the pipeline decides how to run
them (all at once in streaming mode, one model at a time in phased mode) without knowing what
they do. Model stages run as actor pools set up for failure on purpose:

* a dead actor is restarted (`execution.max_restarts`) and its batch retried
  (`execution.max_task_retries`); past that the run stops, resumable;
* an engine that raises is retried on the whole batch (`execution.batch_retries`), then row
  by row, and a row that still fails is rejected with the error (`ResilientStage`), so one
  poisoned prompt costs one row, not the run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import ray

from prefgen.config import LIGHT_TASK_CPUS, PipelineConfig
from prefgen.data.rows import decode_batch, encode_batch, reject

MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Stage:
    name: str
    apply: Callable[[ray.data.Dataset], ray.data.Dataset]
    model: bool = False  # holds a model pool: phased mode gives it a phase of its own


class ResilientStage:
    """Wraps a stage class: retry the batch, then each row alone; reject rows that still fail."""

    def __init__(self, stage_cls: type, stage_kwargs: dict[str, Any], name: str, retries: int):
        self.stage = stage_cls(**stage_kwargs)
        self.name = name
        self.retries = retries

    def __call__(self, batch: pa.Table) -> pa.Table:
        error: BaseException | None = None
        for _ in range(self.retries + 1):
            try:
                return self.stage(batch)
            except PermissionError:  # a rejected API key: no retry or row split can help
                raise
            except Exception as exc:  # noqa: BLE001 - any engine failure is data
                error = exc
        if batch.num_rows == 1:
            return self._reject_all(batch, error)
        return pa.concat_tables(self(batch.slice(i, 1)) for i in range(batch.num_rows))

    def _reject_all(self, batch: pa.Table, error: BaseException) -> pa.Table:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        rows = decode_batch(batch)
        for row in rows:
            if row["status"] == "ok":
                reject(row, self.name, f"error: {detail[:MAX_ERROR_CHARS]}")
        return encode_batch(rows)


def build_stages(cfg: PipelineConfig) -> list[Stage]:
    from prefgen.generate.generator import GenerateStage
    from prefgen.judges.llm_judge import JudgeStage
    from prefgen.judges.scoring import score_batch, scoring_options
    from prefgen.pairing.strategies import pair_batch

    stages: list[Stage] = []
    quality, tagger = cfg.ingest.quality_filter, cfg.ingest.domain_tagger
    if quality.enabled or (tagger.enabled and tagger.model is not None):
        from prefgen.ingest.prompt_stages import DomainTaggerStage, PromptQualityStage

        prompt_stages = []  # quality first: rejected prompts cost no tagging or generation
        if quality.enabled:
            prompt_stages.append(("prompt-quality", PromptQualityStage, quality))
        if tagger.enabled and tagger.model is not None:  # without a model: keywords, in ingest
            prompt_stages.append(("tag-domain", DomainTaggerStage, tagger))
        for name, stage_cls, sub in prompt_stages:
            stages.append(_pool_stage(cfg, name, "ingest", stage_cls, {"cfg": sub}, sub.model))
    for model in cfg.generate.models:
        model = cfg.generate.resolved(model)
        if model.engine == "vllm":
            from prefgen.engines.vllm import apply_vllm_generation

            stages.append(
                Stage(
                    f"generate-{model.name}",
                    partial(apply_vllm_generation, model=model, seed=cfg.generate.seed),
                    model=True,
                )
            )
            continue
        from prefgen.generate.generator import pool_model  # k of N models per prompt: wider batches

        stages.append(
            _pool_stage(
                cfg,
                f"generate-{model.name}",
                "generate",
                GenerateStage,
                {"model": model, "seed": cfg.generate.seed, "generate": cfg.generate},
                pool_model(model, cfg.generate),
            )
        )
    for judge in cfg.judge.llm:
        if judge.model.engine == "vllm":
            from prefgen.engines.vllm import apply_vllm_judging

            stages.append(
                Stage(f"judge-{judge.name}", partial(apply_vllm_judging, judge=judge), model=True)
            )
            continue
        stages.append(
            _pool_stage(
                cfg, f"judge-{judge.name}", "judge", JudgeStage, {"judge": judge}, judge.model
            )
        )
    code = cfg.judge.code_verifier
    if code.enabled:
        from prefgen.judges.code_verifier import verify_batch

        # Sandboxes are processes: give the task a whole CPU so they do not starve the models.
        stages.append(_task_stage("verify-code", partial(verify_batch, cfg=code), num_cpus=1.0))
    stages.append(_task_stage("score", partial(score_batch, **scoring_options(cfg))))
    judge_names = "+".join(
        [j.name for j in cfg.judge.llm]
        + ([cfg.judge.math_verifier.name] if cfg.judge.math_verifier.enabled else [])
        + ([code.name] if code.enabled else [])
    )
    p = cfg.pairing
    stages.append(
        _task_stage(
            "pair",
            partial(
                pair_batch,
                strategy=p.strategy,
                min_margin=p.min_margin,
                min_chosen_score=p.min_chosen_score,
                max_pairs_per_prompt=p.max_pairs_per_prompt,
                seed=p.seed,
                judge=judge_names,
                max_length_ratio=p.max_length_ratio,
                min_judge_agreement=p.min_judge_agreement,
                exclude_from_votes=(cfg.judge.ensemble.name,) if cfg.judge.ensemble.members else (),
            ),
        )
    )
    if cfg.filter.kind == "reward_model":
        from prefgen.pairing.reward_filter import RewardFilterStage

        f = cfg.filter

        def apply_filter(ds: ray.data.Dataset) -> ray.data.Dataset:
            return ds.map_batches(
                RewardFilterStage,
                fn_constructor_kwargs={"cfg": f},
                batch_format="pyarrow",
                batch_size=f.batch_size,
                compute=ray.data.ActorPoolStrategy(size=f.concurrency),
                num_cpus=f.num_cpus,
                max_restarts=cfg.execution.max_restarts,
                max_task_retries=cfg.execution.max_task_retries,
            )

        stages.append(Stage("filter", apply_filter, model=f.url is None))
    return stages


def _pool_stage(cfg, name: str, reject_stage: str, stage_cls, kwargs: dict, model) -> Stage:
    ex = cfg.execution

    def apply(ds: ray.data.Dataset) -> ray.data.Dataset:
        return ds.map_batches(
            ResilientStage,
            fn_constructor_kwargs={
                "stage_cls": stage_cls,
                "stage_kwargs": kwargs,
                "name": reject_stage,
                "retries": ex.batch_retries,
            },
            batch_format="pyarrow",
            batch_size=model.batch_size,
            compute=ray.data.ActorPoolStrategy(size=model.concurrency),
            num_cpus=model.num_cpus,
            num_gpus=model.num_gpus,
            max_restarts=ex.max_restarts,
            max_task_retries=ex.max_task_retries,
        )

    return Stage(name, apply, model=True)


def _task_stage(name: str, fn, num_cpus: float = LIGHT_TASK_CPUS) -> Stage:
    def apply(ds: ray.data.Dataset) -> ray.data.Dataset:
        return ds.map_batches(fn, batch_format="pyarrow", num_cpus=num_cpus)

    return Stage(name, apply)


def phases(stages: list[Stage], mode: str) -> list[tuple[str, list[Stage]]]:
    """Group stages into phases: one in streaming mode; in phased mode, one per model stage.

    Light stages ride with the model stage before them (or the first one); the last phase is
    always named `final`, since it writes the output tables.
    """
    from prefgen.run.shards import FINAL_PHASE

    if mode == "streaming":
        return [(FINAL_PHASE, stages)]
    groups: list[list[Stage]] = []
    for stage in stages:
        # A model stage opens a phase, unless the open one holds only the leading light stages.
        if not groups or (stage.model and any(s.model for s in groups[-1])):
            groups.append([stage])
        else:
            groups[-1].append(stage)
    named = [(f"{i:02d}-{g[0].name}", g) for i, g in enumerate(groups)]
    named[-1] = (FINAL_PHASE, named[-1][1])
    return named
