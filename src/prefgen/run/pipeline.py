"""Runs a pipeline config: plan shards, run the stages phase by phase, commit, write the manifest.

    input files -> ingest (driver: validate, dedup, shard) -> _work/input/
      -> phase(s) of steps on Ray Data (prefgen.run.registry lists the stages,
         prefgen.run.pools groups them into pools, one load per weight set)
      -> ShardCollector commits each complete shard
      -> pairs/ responses/ rejects/ -> manifest.json (the commit point)

Streaming mode runs every stage in one phase with all pools up at once. Phased mode runs one
pool per phase over all shards and persists its rows under `_work/<phase>/`, so a
cluster with few GPUs loads one weight set at a time. Both give the same output for the same seed.

Re-running the same command on the same output resumes: committed shards of every phase are
skipped; a changed config (its hash) or input refuses to mix with the old output unless
`output.overwrite=true` starts over.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import ray

from prefgen.config import INPUT_SUFFIXES, LIGHT_TASK_CPUS, PipelineConfig, config_hash, to_dict
from prefgen.data import ray_cluster, storage
from prefgen.data.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    code_version,
    input_fingerprint,
    model_rates,
    now,
    write_manifest,
)
from prefgen.data.ray_cluster import RayCluster
from prefgen.data.rows import row_key, to_rows, to_table
from prefgen.data.schema import ROW_SCHEMA
from prefgen.run import pools, progress, shards
from prefgen.run.registry import build_stages, model_uses


class OutputExists(RuntimeError):
    """The output URL holds a run this config must not mix with."""


@dataclass
class RunResult:
    output_url: str
    manifest: dict[str, Any]


def init_ray(cfg: PipelineConfig) -> RayCluster:
    """Join the cluster named by ray.address / RAY_ADDRESS, else start a local Ray of our own."""
    return ray_cluster.connect(cfg.ray.address, cfg.ray.num_cpus)


def run(cfg: PipelineConfig) -> RunResult:
    from prefgen.run import preflight

    started, t0 = now(), time.perf_counter()
    preflight.check_config(cfg)  # before anything is written or allocated
    in_fs, _ = storage.filesystem(cfg.input.path, cfg.input.storage_options)
    paths = storage.list_files(
        cfg.input.path, cfg.input.storage_options, INPUT_SUFFIXES[cfg.input.format]
    )
    if not paths:
        raise FileNotFoundError(
            f"no {'/'.join(INPUT_SUFFIXES[cfg.input.format])} files at {cfg.input.path}"
        )
    fs, root = storage.filesystem(cfg.output.path, cfg.output.storage_options)
    identity = {
        "config_hash": config_hash(cfg),
        "input_fingerprint": input_fingerprint(in_fs, paths),
    }
    existing = prepare_output(cfg, fs, root, identity)
    if existing is not None:
        return RunResult(cfg.output.path, existing)
    plan = plan_shards(cfg, in_fs, paths, fs, root, identity)

    cluster = init_ray(cfg)
    if progress.piped():
        progress.quiet_ray_data()
    if cluster.local:
        preflight.check_cluster(cfg)  # an autoscaling cluster may grow: only check a local Ray
    ledgers = open_ledgers(cfg)  # held for the whole run
    source = shards.INPUT_PHASE
    for phase, steps in pools.phases(pools.plan(build_stages(cfg)), cfg.execution.mode):
        run_phase(cfg, fs, root, plan, source, phase, steps)
        source = phase
    usage = read_ledgers(cfg, ledgers)

    markers = shards.committed(fs, root, shards.FINAL_PHASE)
    from prefgen.run.sink import gather

    result = gather(markers)
    counts = result["counts"]
    counts["models"] = model_rates(counts.get("models", {}))
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "config": to_dict(cfg),
        **identity,
        "code_version": code_version(),
        "input": {
            "url": cfg.input.path,
            "files": paths,
            "fingerprint": identity["input_fingerprint"],
        },
        "execution": {
            "mode": cfg.execution.mode,
            "shards": plan["num_shards"],
            "ray": cluster.describe(),
        },
        "started_at": started,
        "finished_at": now(),
        "seconds": round(time.perf_counter() - t0, 2),
        "counts": counts,
        "usage": usage,
        "shards": result["shards"],
    }
    write_manifest(fs, root, manifest)
    return RunResult(cfg.output.path, manifest)


def _openai_models(cfg: PipelineConfig) -> list:
    """Every openai model of the run, once per name (the registry's model list)."""
    found = {}
    for use in model_uses(cfg):
        if use.model.engine == "openai":
            found.setdefault(use.model.name, use.model)
    return list(found.values())


def open_ledgers(cfg: PipelineConfig) -> list:
    """Run-wide request budget and usage counters of each openai model (engines.openai)."""
    if not _openai_models(cfg):
        return []
    from prefgen.engines.openai import open_usage_ledger

    return [open_usage_ledger(m) for m in _openai_models(cfg)]


def read_ledgers(cfg: PipelineConfig, ledgers: list) -> dict:
    """openai usage per model for the manifest: requests, retries, tokens, budget refusals."""
    if not ledgers:
        return {}
    from prefgen.engines.openai import read_usage

    usage = {m.name: read_usage(m) for m in _openai_models(cfg)}
    for ledger in ledgers:
        ray.kill(ledger)
    return usage


def prepare_output(cfg: PipelineConfig, fs, root: str, identity: dict) -> dict | None:
    """Decide start / resume / refuse. Returns the manifest of an identical finished run."""
    manifest_path = storage.join(root, MANIFEST)
    plan_path = storage.join(root, shards.PLAN)
    if cfg.output.overwrite:
        for part in (MANIFEST, shards.WORK, "pairs", "responses", "rejects"):
            storage.remove_tree(fs, storage.join(root, part))
        fs.makedirs(root, exist_ok=True)
        return None
    for path, what in ((manifest_path, "a finished run"), (plan_path, "an unfinished run")):
        if not fs.exists(path):
            continue
        found = storage.read_json(fs, path)
        mismatch = [k for k in identity if found.get(k) != identity[k]]
        if mismatch:
            raise OutputExists(
                f"{cfg.output.path} holds {what} with a different "
                f"{' and '.join(k.replace('_', ' ') for k in mismatch)} "
                f"({', '.join(f'{found.get(k)} != {identity[k]}' for k in mismatch)}); "
                "set output.overwrite=true to start over, or choose another output.path"
            )
        if path == manifest_path:
            return found
    fs.makedirs(root, exist_ok=True)
    return None


def plan_shards(
    cfg: PipelineConfig, in_fs, paths: list[str], fs, root: str, identity: dict
) -> dict:
    """Ingest on the driver, streaming: each shard's rows are written as soon as it is full,
    then the decisions that need every row (quotas, near-duplicates) rewrite the shards they
    touch. Reuses an existing plan."""
    plan_path = storage.join(root, shards.PLAN)
    if fs.exists(plan_path):
        return storage.read_json(fs, plan_path)
    from prefgen.ingest.sources import QuotaSample, read_prompts

    ing = cfg.ingest
    quotas = QuotaSample(
        list(cfg.input.sources), ing.seed, ing.stratify_by, ing.stratify_allocation
    )
    written = shards.InputShards(fs, root, cfg.execution.shard_rows)
    for row in read_prompts(cfg, in_fs, paths):
        quotas.add(written.add(row), row)
    written.close()
    written.reject(quotas.rejects())
    if ing.near_dup.enabled:
        init_ray(cfg)  # the encoder runs as an actor pool on the cluster
        written.reject(near_duplicates(written, ing.near_dup))
    plan = {
        **identity,
        "records": written.count,
        "num_shards": max(1, len(written.rows)),
        "rows": {str(s): n for s, n in sorted(written.rows.items())},
        "created_at": now(),
    }
    storage.write_json_atomic(fs, plan_path, plan)  # written last: the plan's own commit
    return plan


def near_duplicates(written: shards.InputShards, cfg) -> list[tuple[list[int], str]]:
    """([record number], `near_duplicate: ...`) for the valid prompts in the written shards.

    The texts of every valid prompt, then their embeddings, are held on the driver (384 floats
    a prompt with MiniLM): near-dup costs driver memory in proportion to the input.
    """
    from prefgen.ingest.near_dup import near_duplicate_reasons, prompt_text

    numbers, candidates = [], []
    for shard in sorted(written.rows):
        for offset, row in enumerate(written.read(shard)):
            if row["status"] == "ok":
                numbers.append(shard * written.shard_rows + offset)
                candidates.append((row_key(row), prompt_text(row["messages"])))
    reasons = near_duplicate_reasons(candidates, cfg)
    return [([n], reason) for n, reason in zip(numbers, reasons) if reason]


def read_shard_files(batch: pa.Table, url: str, options: dict) -> pa.Table:
    """Rows [start, stop) of each listed shard file: one small block per slice."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(url, options)
    tables = []
    for path, start, stop in zip(*(batch.column(c).to_pylist() for c in ("path", "start", "stop"))):
        table = pq.read_table(path, filesystem=storage.arrow_filesystem(fs), schema=ROW_SCHEMA)
        tables.append(table.slice(start, stop - start))
    return pa.concat_tables(tables)


def run_phase(cfg, fs, root: str, plan: dict, source: str, phase: str, steps) -> None:
    """Run `steps` over every shard not yet committed in `phase`, committing shard by shard."""
    done = shards.committed(fs, root, phase)
    expected = {int(s): n for s, n in plan["rows"].items() if int(s) not in done}
    if not expected:
        return
    # Blocks are smaller than shards (execution.block_rows), so stages overlap within a shard
    # and a small run still spreads over its pools; the collector reassembles shards. One tiny
    # task per slice (not read_parquet: its file listing asks for a whole CPU, which the model
    # pools may all hold, and the run would wait forever).
    block = cfg.execution.block_rows
    slices = [
        {"path": shards.phase_file(root, source, s), "start": a, "stop": min(a + block, n)}
        for s, n in sorted(expected.items())
        for a in range(0, n, block)
    ]
    ds = ray.data.from_items(slices, override_num_blocks=len(slices))
    ds = ds.map_batches(
        partial(
            read_shard_files,
            url=cfg.output.path,
            options=storage.resolve_options(cfg.output.path, cfg.output.storage_options),
        ),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=LIGHT_TASK_CPUS,
    )
    counter = progress.counter() if progress.piped() else None
    for step in steps:
        ds = pools.apply(ds, step, cfg.execution, counter)

    from prefgen.run.sink import commit_final_shard

    if phase == shards.FINAL_PHASE:
        write = partial(commit_final_shard, fs, root)
    else:
        write = partial(shards.commit_phase_shard, fs, root, phase)
    decisions = [stage.on_shard for step in steps for stage in step.stages if stage.on_shard]

    def commit(shard: int, table: pa.Table) -> dict:
        if decisions:  # per-shard decisions (a judging budget) see the whole shard, in order
            rows = to_rows(table)
            for decision in decisions:
                decision(rows)
            table = to_table(rows)
        return write(shard=shard, table=table)

    collector = shards.ShardCollector(
        expected,
        commit,
        phase,
        max_error_rate=cfg.execution.max_error_rate,
        min_rows_for_error_rate=cfg.execution.min_rows_for_error_rate,
    )
    names = [stage.name for step in steps for stage in step.stages]
    watch = (
        progress.Reporter(phase, names, sum(expected.values()), counter)
        if counter is not None
        else contextlib.nullcontext()
    )
    with watch:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            collector.add(batch)
        collector.finish()
    missing = collector.incomplete()
    if missing:
        raise RuntimeError(
            f"phase {phase}: shards never completed (rows received): {missing}; "
            "run the same command again to redo them"
        )
