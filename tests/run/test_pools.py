"""How stages become Ray Data operators (pure, from config): one pool per weight set, light
stages inside the pool before them, phases per pool; and what the pipeline actually builds on
Ray Data matches what preflight reports (both read the same registry and plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefgen.config import ModelConfig
from prefgen.run import pools
from prefgen.run.preflight import model_pools
from prefgen.run.registry import ModelUse, Stage, build_stages, load_pipeline

ROOT = Path(__file__).resolve().parents[2]
# Pipeline presets: not the train-rm config, not the loop (which names a pipeline)
PRESETS = sorted(p for p in (ROOT / "pipelines").glob("*.yaml") if p.stem not in ("reward", "loop"))


def _model(name: str, **kw) -> ModelConfig:
    return ModelConfig(name=name, **kw)


def _heavy(name: str, *models: ModelConfig) -> Stage:
    return Stage(
        name,
        name,
        lambda engines: lambda rows: rows,
        tuple(ModelUse(f"{name}.{m.name}", m) for m in models),
    )


def _light(name: str, own_task: float | None = None) -> Stage:
    return Stage(name, name, lambda engines: lambda rows: rows, own_task_cpus=own_task)


def _shape(steps):
    return [(s.name, s.pool, [x.name for x in s.stages], len(s.engines)) for s in steps]


def test_models_on_the_same_weights_share_one_pool_and_light_stages_ride_inside():
    a, b = _model("a", num_cpus=0.4), _model("b", num_cpus=1.5, temperature=1.1)
    judge = _model("j", num_cpus=0.5, concurrency=2)
    steps = pools.plan(
        [_heavy("gen-a", a), _heavy("gen-b", b), _heavy("judge", judge), _light("score")]
    )
    assert _shape(steps) == [("gen-a", True, ["gen-a", "gen-b", "judge", "score"], 1)]
    (pool,) = steps
    assert pool.num_cpus == 1.5 and pool.concurrency == 2  # the most demanding member


def test_other_weights_separate_pool_and_own_task_stages_split_pools():
    small, other = _model("s"), _model("o", path="/models/other")
    alone = _model("alone", separate_pool=True)
    steps = pools.plan(
        [
            _heavy("gen-s", small),
            _heavy("gen-o", other),
            _heavy("gen-alone", alone),
            _light("verify", own_task=1.0),
            _light("score"),
            _heavy("judge", small),
        ]
    )
    assert _shape(steps) == [
        ("gen-s", True, ["gen-s"], 1),
        ("gen-o", True, ["gen-o"], 1),
        ("gen-alone", True, ["gen-alone"], 1),
        ("verify", False, ["verify"], 0),
        ("score", False, ["score"], 0),
        ("judge", True, ["judge"], 1),
    ]
    assert steps[3].num_cpus == 1.0


def test_a_cdr_judge_with_its_own_weak_model_loads_both_in_one_pool():
    strong, weak = _model("strong"), _model("weak", path="/models/weak")
    steps = pools.plan([_heavy("gen", strong), _heavy("cdr", strong, weak)])
    assert _shape(steps) == [("gen", True, ["gen"], 1), ("cdr", True, ["cdr"], 2)]
    assert steps[1].engine_for() == {"cdr.strong": "cdr.strong", "cdr.weak": "cdr.weak"}


def test_phases_one_per_pool_light_steps_ride_along_last_is_final():
    steps = pools.plan(
        [
            _heavy("gen", _model("s")),
            _heavy("judge", _model("j", path="/m/j")),
            _light("verify", own_task=1.0),
            _light("score"),
        ]
    )
    assert [(name, [s.name for s in group]) for name, group in pools.phases(steps, "phased")] == [
        ("00-gen", ["gen"]),
        ("final", ["judge", "verify", "score"]),
    ]
    assert pools.phases(steps, "streaming") == [("final", steps)]


def test_the_quickstart_is_one_load():
    cfg = load_pipeline(ROOT / "pipelines" / "quickstart.yaml")
    steps = pools.plan(build_stages(cfg))
    assert [s.pool for s in steps] == [True] and len(steps[0].engines) == 1
    assert [s.name for s in steps[0].stages] == [
        "generate-smol-helpful",
        "generate-smol-stepwise",
        "generate-smol-terse",
        "judge-coig_p",
        "score",
        "pair",
    ]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preflight_reports_exactly_the_pools_the_pipeline_builds(preset, ray_session):
    """The Ray Data plan the pipeline builds (actor pools with their CPUs, GPUs and sizes) is
    read back from Ray Data's own logical plan and compared with preflight's view."""
    import ray

    cfg = load_pipeline(preset)
    ds = ray.data.from_items([{"x": 1}])
    for step in pools.plan(build_stages(cfg)):
        ds = pools.apply(ds, step, cfg.execution)
    built = []
    op = ds._logical_plan.dag
    while op is not None:
        compute = getattr(op, "compute", None)
        if isinstance(compute, ray.data.ActorPoolStrategy):
            args = op.ray_remote_args
            built.append(
                (
                    args.get("num_cpus", 0) * compute.max_size,
                    (args.get("num_gpus") or 0) * compute.max_size,
                )
            )
        deps = getattr(op, "input_dependencies", [])
        op = deps[0] if deps else None
    built.reverse()
    reported = [(p.cpus, p.gpus) for p in model_pools(cfg)]
    assert built and built == reported
    keys = {key for p in model_pools(cfg) for key in p.key.split(", ")}
    models = {use.key for s in build_stages(cfg) for use in s.models}
    assert models <= keys  # every model the stages use sits in a reported pool
