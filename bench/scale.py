"""Orchestration at scale with the benchmark engine (`engine: echo`, no model): wall time, peak
RSS of the driver and of the whole process tree, at several input sizes, and the fitted
exponent of wall time in prompts between sizes (1.0 = linear; a fixed start-up cost pulls the
smaller sizes' exponent below 1) and the marginal seconds per 1000 prompts.

    .venv/bin/python bench/scale.py [--prompts 10000 100000] [--tokens 16]

Each size runs `prefgen run` on synthetic distinct prompts with one echo generator (two
samples) and an echo judge, shards of 1024 prompts. The driver's and the tree's resident
memory are sampled every 0.2 s with psutil.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml


def config(prompts: Path, out: Path, tokens: int) -> dict:
    model = {"engine": "echo", "batch_size": 256, "num_cpus": 0.5, "concurrency": 2}
    return {
        "name": "scale",
        "input": {"path": str(prompts)},
        "output": {"path": str(out)},
        "generate": {
            "max_tokens": tokens,
            "models": [{"name": "echo-a", "samples_per_prompt": 2, **model}],
        },
        "judge": {
            "llm": [{"name": "j", "rubric": "coig_p", "model": {"name": "echo-j", **model}}],
            "math_verifier": {"enabled": False},
        },
        "pairing": {"strategy": "best_vs_worst"},
        "execution": {"shard_rows": 1024, "block_rows": 256},
    }


def run(n: int, tokens: int, workdir: Path) -> dict:
    prompts = workdir / f"prompts-{n}.jsonl"
    with prompts.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps({"id": f"p{i}", "prompt": f"Question {i}: what is {i} plus {i % 97}?"})
                + "\n"
            )
    cfg = workdir / f"scale-{n}.yaml"
    cfg.write_text(yaml.safe_dump(config(prompts, workdir / f"run-{n}", tokens)))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    driver = psutil.Process(proc.pid)
    peak_driver = peak_tree = 0
    while proc.poll() is None:
        try:
            rss = driver.memory_info().rss
            tree = rss + sum(c.memory_info().rss for c in driver.children(recursive=True))
        except psutil.Error:
            break
        peak_driver, peak_tree = max(peak_driver, rss), max(peak_tree, tree)
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"prefgen run failed at {n} prompts"
    pairs = json.loads((workdir / f"run-{n}" / "manifest.json").read_text())["counts"]["pairs"]
    return {
        "n": n,
        "seconds": seconds,
        "driver_mb": peak_driver / 2**20,
        "tree_mb": peak_tree / 2**20,
        "pairs": pairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.prompts:
            r = run(n, args.tokens, Path(tmp))
            results.append(r)
            print(f"{n:>9} prompts  {r['seconds']:8.1f}s  driver peak {r['driver_mb']:7.0f} MB  "
                  f"tree peak {r['tree_mb']:7.0f} MB  {r['pairs']} pairs", flush=True)  # fmt: skip
    if len(results) >= 2:
        a, b = results[0], results[-1]
        for lo, hi in zip(results, results[1:]):
            exponent = math.log(hi["seconds"] / lo["seconds"]) / math.log(hi["n"] / lo["n"])
            marginal = (hi["seconds"] - lo["seconds"]) / (hi["n"] - lo["n"]) * 1000
            print(f"wall time ~ prompts^{exponent:.2f} ({lo['n']} -> {hi['n']}); "
                  f"{marginal:.2f}s per 1000 more prompts")  # fmt: skip
        print(
            f"driver peak x{b['driver_mb'] / a['driver_mb']:.2f}, tree peak x{b['tree_mb'] / a['tree_mb']:.2f}"
            f" ({a['n']} -> {b['n']})"
        )


if __name__ == "__main__":
    main()
