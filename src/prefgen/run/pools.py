"""Stages -> the Ray Data operators that run them: pools of actors that load each weight set once.

`plan(stages)` walks the stages in flow order and groups them into steps:

* a **pool** is an actor pool that loads its engines once per actor and runs a run of stages
  on every batch. Consecutive stages whose models share weights (same engine, path, device,
  dtype, context length, parallelism: `ModelConfig.weight_key`) join one pool, so the
  quickstart's three generators and its judge (all SmolLM2) are one load, not four. A model
  with `separate_pool: true`, a stage that holds its own client (the reward filter), or a
  model on other weights opens a new pool. Light stages (score, pair) run inside the pool
  before them: no extra task, no extra Arrow conversion.
* a **task** step runs light stages that have no pool before them, or a stage that asks for a
  task of its own (the code verifier's sandboxes get a whole CPU).

A pool reserves what its most demanding model asks for (CPUs, GPUs, actors); its torch / vLLM
threads follow its CPUs. In phased mode each pool is a phase of its own (its rows persisted
before the next pool loads), so a cluster with few GPUs holds one weight set at a time. A stage
with a per-shard decision (`Stage.on_shard`, the routing budget) ends its step and, in both
modes, its phase: the driver applies the decision to each complete shard as it commits it.

Failures inside a pool: a stage that raises is retried on the whole batch
(`execution.batch_retries`), then row by row; a row that still fails is rejected with the error
(`Stage.reject_as`), so one poisoned prompt costs one row, not the run. An auth failure
(PermissionError: a rejected API key) is never retried. A dead actor is restarted
(`execution.max_restarts`) and its batch retried (`execution.max_task_retries`).
"""

from __future__ import annotations

import copy
import time
import traceback
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefgen.config import LIGHT_TASK_CPUS, ExecutionConfig, ModelConfig
from prefgen.data.rows import reject, to_rows, to_table
from prefgen.run.registry import Stage

MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Step:
    """One Ray Data operator: a pool of actors, or a stateless task."""

    name: str
    stages: tuple[Stage, ...]
    engines: tuple[tuple[str, ModelConfig], ...] = ()  # (weight owner key, model) per weight set
    num_cpus: float = LIGHT_TASK_CPUS
    num_gpus: float = 0.0
    concurrency: int = 1
    max_concurrency: int | None = None
    batch_size: int | None = None
    pool: bool = False
    placement: tuple[dict, ...] = ()  # placement-group bundles per actor (vLLM tensor parallel)
    accelerator_type: str | None = None

    @property
    def weight_keys(self) -> set:
        return {model.weight_key() for _, model in self.engines}

    def engine_for(self) -> dict[str, str]:
        """Stage model key -> the key of the engine that serves it (one per weight set)."""
        by_weights = {model.weight_key(): key for key, model in self.engines}
        return {
            use.key: by_weights[use.model.weight_key()] for s in self.stages for use in s.models
        }


def plan(stages: list[Stage]) -> list[Step]:
    """Group stages into pools and tasks, in flow order (see the module docstring)."""
    steps: list[Step] = []
    open_pool: Step | None = None
    for stage in stages:
        open_pool = _place(steps, open_pool, stage)
        if stage.on_shard is not None:  # a per-shard decision ends its step (and its phase)
            open_pool = _close(steps, open_pool)
    _close(steps, open_pool)
    return steps


def _place(steps: list[Step], open_pool: Step | None, stage: Stage) -> Step | None:
    """Put one stage in the open pool, the last task or a new step; returns the open pool."""
    if stage.own_task_cpus is not None:
        _close(steps, open_pool)
        steps.append(Step(stage.name, (stage,), num_cpus=stage.own_task_cpus))
        return None
    if not stage.heavy:
        if open_pool is not None:
            return _with(open_pool, stage)
        last = steps[-1].stages[-1] if steps and not steps[-1].pool else None
        if last is not None and last.own_task_cpus is None and last.on_shard is None:
            steps[-1] = Step(steps[-1].name, (*steps[-1].stages, stage))
        else:
            steps.append(Step(stage.name, (stage,)))
        return None
    if open_pool is not None and _fits(open_pool, stage):
        return _with(open_pool, stage)
    _close(steps, open_pool)
    return _with(Step(stage.name, (), pool=True, num_cpus=0.0, concurrency=0), stage)


def _fits(pool: Step, stage: Stage) -> bool:
    """A model stage joins the open pool when every model it needs is already loaded there."""
    if stage.holds is not None or any(s.holds is not None for s in pool.stages):
        return False
    if any(u.model.separate_pool for u in stage.models):
        return False
    if any(u.model.separate_pool for s in pool.stages for u in s.models):
        return False
    return all(u.model.weight_key() in pool.weight_keys for u in stage.models)


def _with(pool: Step, stage: Stage) -> Step:
    engines = list(pool.engines)
    for use in stage.models:
        if use.model.weight_key() not in {m.weight_key() for _, m in engines}:
            engines.append((use.key, use.model))
    models = [u.model for s in (*pool.stages, stage) for u in s.models]
    holds = [s.holds for s in (*pool.stages, stage) if s.holds is not None]
    batch = [s.batch_rows for s in (*pool.stages, stage) if s.batch_rows]
    bundles: tuple[dict, ...] = ()
    for m in models:
        if m.engine == "vllm":
            from prefgen.engines.vllm import placement_bundles

            found = placement_bundles(m.tensor_parallel_size, m.pipeline_parallel_size, m.on_gpu())
            bundles = tuple(found) if len(found) > len(bundles) else bundles
    return Step(
        pool.name,
        (*pool.stages, stage),
        tuple(engines),
        num_cpus=max([m.num_cpus for m in models] + [h.num_cpus for h in holds], default=0.0),
        num_gpus=max(
            [m.gpus_per_actor() for m in models] + [h.num_gpus for h in holds], default=0.0
        ),
        concurrency=max(
            [m.concurrency for m in models] + [h.concurrency for h in holds], default=1
        ),
        max_concurrency=max([m.max_concurrency or 0 for m in models], default=0) or None,
        batch_size=max(batch) if batch else None,
        pool=True,
        placement=bundles,
        accelerator_type=next((m.accelerator_type for m in models if m.accelerator_type), None),
    )


def _close(steps: list[Step], pool: Step | None) -> None:
    """Append the open pool, if any; returns the new (no longer open) pool: None."""
    if pool is not None:
        steps.append(pool)
    return None


def phases(steps: list[Step], mode: str) -> list[tuple[str, list[Step]]]:
    """Steps grouped into phases: one in streaming mode; in phased mode, one per pool, light
    steps riding with the pool before them (or the first one). In both modes a step that ends
    with a per-shard decision (`Stage.on_shard`) ends its phase, so the driver sees each whole
    shard before the next stage does. The last phase is always named `final`, since it writes
    the output tables."""
    from prefgen.run.shards import FINAL_PHASE

    groups: list[list[Step]] = [[]]
    for step in steps:
        if mode != "streaming" and step.pool and any(s.pool for s in groups[-1]):
            groups.append([])
        groups[-1].append(step)
        if step.stages[-1].on_shard is not None and step is not steps[-1]:
            groups.append([])
    named = [(f"{i:02d}-{g[0].name}", g) for i, g in enumerate(groups)]
    named[-1] = (FINAL_PHASE, named[-1][1])
    return named


# -- running a step's stages on a batch --------------------------------------------------------


def run_stage(stage: Stage, step_fn, rows: list[dict], retries: int) -> list[dict]:
    """One stage over rows: retried on the whole batch, then row by row; rows that still fail
    are rejected with the error. Each attempt works on a copy, so a failure half-way through
    leaves nothing behind."""
    if not stage.resilient:
        return step_fn(rows)
    error: BaseException | None = None
    for _ in range(retries + 1):
        try:
            return step_fn(copy.deepcopy(rows))
        except PermissionError:  # a rejected API key: no retry or row split can help
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure is data
            error = exc
    if len(rows) == 1:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        if rows[0]["status"] == "ok":
            reject(rows[0], stage.reject_as, f"error: {detail[:MAX_ERROR_CHARS]}")
        return rows
    return [
        row for i in range(len(rows)) for row in run_stage(stage, step_fn, rows[i : i + 1], retries)
    ]


class StepWorker:
    """What runs in a Ray Data actor (a pool) or task: engines loaded once, stages in order.

    Each stage adds its share of the batch's time to every row's `stage_seconds`, which the
    sink sums into the manifest.
    """

    def __init__(self, step: Step, retries: int = 0, progress: Any = None):
        from prefgen.engines import load_engine

        # An engine's threads follow what the whole pool reserved, not one model's share.
        loaded = {
            key: load_engine(model.model_copy(update={"num_cpus": step.num_cpus}))
            for key, model in step.engines
        }
        served_by = step.engine_for()
        self.steps = []
        for stage in step.stages:
            engines = {use.key: loaded[served_by[use.key]] for use in stage.models}
            self.steps.append((stage, stage.make(engines)))
        self.retries = retries
        self.progress = progress

    def __call__(self, batch):
        rows = to_rows(batch)
        for stage, step_fn in self.steps:
            start = time.perf_counter()
            rows = run_stage(stage, step_fn, rows, self.retries)
            share = (time.perf_counter() - start) / max(1, len(rows))
            for row in rows:
                row["stage_seconds"][stage.name] = row["stage_seconds"].get(stage.name, 0.0) + share
            if self.progress is not None:
                self.progress.add.remote(stage.name, len(rows))
        return to_table(rows)


def apply(ds, step: Step, ex: ExecutionConfig, progress: Any = None):
    """Attach one step to a Ray Data dataset."""
    import ray

    if not step.pool:  # light stages: a stateless task builds them from the pickled step
        return ds.map_batches(
            _task, fn_kwargs={"step": step}, batch_format="pyarrow", num_cpus=step.num_cpus
        )
    n, most = step.concurrency, max(step.concurrency, step.max_concurrency or 0)
    compute = (
        ray.data.ActorPoolStrategy(size=n)
        if most == n
        else ray.data.ActorPoolStrategy(min_size=n, max_size=most)
    )
    # Ray 2.60 has no named parameter for actor restarts and warns that ray_remote_args_fn goes
    # in Ray 2.64 (pyproject pins below it); without it a pool would restart a crashing actor
    # forever, where execution.max_restarts bounds it.
    restarts = {"max_restarts": ex.max_restarts, "max_task_retries": ex.max_task_retries}
    extra = {"accelerator_type": step.accelerator_type} if step.accelerator_type else {}
    warnings.filterwarnings("ignore", message="`ray_remote_args_fn` is deprecated")
    if step.placement:  # vLLM starts its tensor-parallel workers in the actor's own group
        resources = {
            "num_cpus": 1,  # the actor's own share of the first bundle; the GPUs are the group's
            "num_gpus": 0,
            "ray_remote_args_fn": partial(placement_args, step.placement, restarts),
        }
    else:
        resources = {
            "num_cpus": step.num_cpus,
            "num_gpus": step.num_gpus or None,
            "ray_remote_args_fn": lambda: dict(restarts),
        }
    return ds.map_batches(
        StepWorker,
        fn_constructor_kwargs={"step": step, "retries": ex.batch_retries, "progress": progress},
        batch_format="pyarrow",
        batch_size=step.batch_size,
        compute=compute,
        **resources,
        **extra,
    )


def placement_args(bundles: tuple[dict, ...], restarts: dict) -> dict:
    """Remote args of one pool actor that hosts a multi-GPU vLLM engine: a placement group of
    its own (one bundle per vLLM worker, the first also holding the actor), children captured,
    so vLLM's Ray executor places its workers in it (as `ray.data.llm` does)."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(list(bundles), strategy="PACK")
    strategy = PlacementGroupSchedulingStrategy(
        group, placement_group_capture_child_tasks=True, placement_group_bundle_index=0
    )
    return {**restarts, "scheduling_strategy": strategy}


def _task(batch, step: Step):
    return StepWorker(step)(batch)
