"""Wires the stages into one streaming Ray Data pipeline; knows nothing of what they do inside.

    read files -> split records -> [limit] -> validate + dedup
      -> generate (one actor pool per model) -> judge (one pool per LLM judge)
      -> verify + overall -> pair -> [reward-model filter] -> sink (pairs/, responses/, rejects/) -> manifest.json

One row per prompt flows end to end, so nothing needs a shuffle and memory stays bounded.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray

from prefgen import storage
from prefgen.config import PipelineConfig, config_hash, resolve_model, score_scales, to_dict
from prefgen.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    code_version,
    input_fingerprint,
    model_rates,
    now,
    write_manifest,
)

# Stateless stages are cheap; they must not wait behind CPUs the model actors hold.
LIGHT_TASK_CPUS = 0.25


class OutputExists(RuntimeError):
    pass


@dataclass
class RunResult:
    output_url: str
    manifest: dict[str, Any]


def init_ray(cfg: PipelineConfig) -> None:
    """Join the cluster named by ray.address / RAY_ADDRESS, else start a local Ray."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False)


def prepare_output(cfg: PipelineConfig):
    """Refuse to overwrite a committed run unless told; clear leftovers of an uncommitted one."""
    fs, root = storage.filesystem(cfg.output.path, cfg.output.storage_options)
    if fs.exists(storage.join(root, MANIFEST)):
        if not cfg.output.overwrite:
            raise OutputExists(
                f"{cfg.output.path} already holds a committed run; set output.overwrite=true to replace it"
            )
        storage.remove_tree(fs, storage.join(root, MANIFEST))
    for table in ("pairs", "responses", "rejects"):
        storage.remove_tree(fs, storage.join(root, table))
    fs.makedirs(root, exist_ok=True)
    return fs, root


def run(cfg: PipelineConfig) -> RunResult:
    started, t0 = now(), time.perf_counter()
    in_fs, _ = storage.filesystem(cfg.input.path, cfg.input.storage_options)
    suffixes = {
        "jsonl": (".jsonl", ".json"),
        "parquet": (".parquet",),
        "auto": (".jsonl", ".json", ".parquet"),
    }[cfg.input.format]
    paths = storage.list_files(cfg.input.path, cfg.input.storage_options, suffixes)
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files at {cfg.input.path}")
    out_fs, out_root = prepare_output(cfg)
    init_ray(cfg)

    dedup_name = None
    if cfg.ingest.dedup:
        from prefgen.ingest import DedupRegistry

        dedup_name = f"prefgen-dedup-{uuid.uuid4().hex[:8]}"
        registry = ray.remote(num_cpus=0)(DedupRegistry).options(name=dedup_name).remote()

    ds = build_dataset(cfg, in_fs, paths, dedup_name)
    from prefgen.sink import PrefgenSink

    sink = PrefgenSink(cfg.output.path, cfg.output.storage_options)
    ds.write_datasink(sink, ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
    if dedup_name:
        ray.kill(registry)

    result = sink.result or {"shards": {"pairs": [], "responses": [], "rejects": []}, "counts": {}}
    counts = result["counts"]
    counts["models"] = model_rates(counts.get("models", {}))
    _ensure_pairs_file(out_fs, out_root, result["shards"])
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "code_version": code_version(),
        "input": {
            "url": cfg.input.path,
            "files": paths,
            "fingerprint": input_fingerprint(in_fs, paths),
        },
        "started_at": started,
        "finished_at": now(),
        "seconds": round(time.perf_counter() - t0, 2),
        "counts": counts,
        "shards": result["shards"],
    }
    write_manifest(out_fs, out_root, manifest)
    return RunResult(cfg.output.path, manifest)


def _ensure_pairs_file(fs, root: str, shards: dict) -> None:
    """A run with no pairs still gets one empty pairs file, so loaders see the schema, not an error."""
    if shards["pairs"]:
        return
    import pyarrow as pa

    from prefgen.schema import PAIR_SCHEMA

    rel = "pairs/part-empty.parquet"
    storage.write_parquet_atomic(
        fs, storage.join(root, rel), pa.Table.from_pylist([], schema=PAIR_SCHEMA)
    )
    shards["pairs"].append({"path": rel, "rows": 0})


def build_dataset(
    cfg: PipelineConfig, in_fs, paths: list[str], dedup_name: str | None
) -> ray.data.Dataset:
    from functools import partial

    from prefgen.generate import GenerateStage
    from prefgen.ingest import split_records, validate_batch
    from prefgen.judges.llm_judge import JudgeStage
    from prefgen.judges.scoring import score_batch
    from prefgen.pairing import pair_batch

    light = {"num_cpus": LIGHT_TASK_CPUS}
    ds = ray.data.read_binary_files(
        paths,
        filesystem=storage.arrow_filesystem(in_fs),
        include_paths=True,
        num_cpus=LIGHT_TASK_CPUS,
    )
    block_rows = min(
        [m.batch_size for m in cfg.generate.models] + [j.model.batch_size for j in cfg.judge.llm]
    )
    ds = ds.map_batches(
        partial(split_records, fmt=cfg.input.format, rows_per_block=block_rows),
        batch_size=1,
        **light,
    )
    if cfg.limit:
        ds = ds.limit(cfg.limit)
    ds = ds.map_batches(
        partial(
            validate_batch, max_prompt_chars=cfg.ingest.max_prompt_chars, dedup_actor=dedup_name
        ),
        batch_format="pyarrow",
        **light,
    )

    for model in cfg.generate.models:
        model = resolve_model(model, cfg.generate)
        if model.engine == "vllm":
            from prefgen.engines.vllm import apply_vllm_generation

            ds = apply_vllm_generation(ds, model, cfg.generate.seed)
            continue
        ds = ds.map_batches(
            GenerateStage,
            fn_constructor_kwargs={"model": model, "seed": cfg.generate.seed},
            batch_format="pyarrow",
            batch_size=model.batch_size,
            compute=ray.data.ActorPoolStrategy(size=model.concurrency),
            num_cpus=model.num_cpus,
            num_gpus=model.num_gpus,
        )
    for judge in cfg.judge.llm:
        ds = ds.map_batches(
            JudgeStage,
            fn_constructor_kwargs={"judge": judge},
            batch_format="pyarrow",
            batch_size=judge.model.batch_size,
            compute=ray.data.ActorPoolStrategy(size=judge.model.concurrency),
            num_cpus=judge.model.num_cpus,
            num_gpus=judge.model.num_gpus,
        )
    scales = score_scales(cfg)
    ds = ds.map_batches(
        partial(
            score_batch,
            verifier=cfg.judge.math_verifier,
            weights=dict(cfg.judge.weights),
            scales=scales,
        ),
        batch_format="pyarrow",
        **light,
    )
    judge_names = "+".join(
        [j.name for j in cfg.judge.llm]
        + ([cfg.judge.math_verifier.name] if cfg.judge.math_verifier.enabled else [])
    )
    p = cfg.pairing
    ds = ds.map_batches(
        partial(
            pair_batch,
            strategy=p.strategy,
            min_margin=p.min_margin,
            min_chosen_score=p.min_chosen_score,
            max_pairs_per_prompt=p.max_pairs_per_prompt,
            seed=p.seed,
            judge=judge_names,
        ),
        batch_format="pyarrow",
        **light,
    )
    if cfg.filter.kind == "reward_model":
        from prefgen.filtering import RewardFilterStage

        ds = ds.map_batches(
            RewardFilterStage,
            fn_constructor_kwargs={"cfg": cfg.filter},
            batch_format="pyarrow",
            batch_size=cfg.filter.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.filter.concurrency),
            num_cpus=cfg.filter.num_cpus,
        )
    return ds
