"""The whole quickstart job two ways, side by side: `prefgen run` vs the same stage code in one
plain Python process (no Ray, one engine load per weight set, torch on all cores).

The script side is what a user could write with prefgen's own pieces: ingest the prompts
(`prefgen.ingest.sources.read_prompts`), take the stages the registry builds for the config
and the pools `prefgen.run.pools.plan` groups them into, load each pool's engines once, and
run every stage over the rows in the pool's batch size, one stage after another. Both sides
sample with the same per-request seeds, so they generate the same responses (up to float
differences between thread counts); the bench prints both token counts. The script skips
what the quickstart does not use: source quotas and near-duplicate detection (the run's planning
step applies those).

    .venv/bin/python bench/whole_job.py [--prompts 36 360] [--threads 2]

For more than the quickstart's 36 prompts, variants of them are written to a temporary file
("... (variant k)"), distinct prompts of the same shape. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"

SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
import torch
from prefgen.data import storage
from prefgen.engines import load_engine
from prefgen.ingest.sources import read_prompts
from prefgen.run import pools
from prefgen.run.registry import build_stages, load_pipeline

prompts, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
cfg = load_pipeline(sys.argv[3], [f"input.path={prompts}", "output.path=/tmp/unused"])
fs, _ = storage.filesystem(prompts)
rows = list(read_prompts(cfg, fs, storage.list_files(prompts)))
for step in pools.plan(build_stages(cfg)):
    served_by = step.engine_for()
    loaded = {k: load_engine(m.model_copy(update={"num_cpus": float(threads)})) for k, m in step.engines}
    torch.set_num_threads(threads)
    fns = [(s, s.make({u.key: loaded[served_by[u.key]] for u in s.models})) for s in step.stages]
    size = step.batch_size or len(rows)
    for lo in range(0, len(rows), size):
        batch = rows[lo:lo + size]
        for _, fn in fns:
            batch = fn(batch)
tokens = sum(r["n_tokens"] for row in rows if row["status"] == "ok" for r in row["responses"])
pairs = sum(len(row["pairs"]) for row in rows if row["status"] == "ok")
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens, "pairs": pairs}))
"""


def prompts_file(n: int, directory: Path) -> Path:
    """The quickstart's prompts, with distinct variants past 36."""
    base = [
        json.loads(line)
        for line in (ROOT / "pipelines/data/quickstart_prompts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    out = []
    for k in range(n):
        record = dict(base[k % len(base)])
        if k >= len(base):
            record["id"] = f"{record.get('id', 'p')}-v{k // len(base)}"
            suffix = f" (variant {k // len(base)})"
            if "prompt" in record:
                record["prompt"] += suffix
            else:  # a chat record: vary its last user turn
                messages = [dict(m) for m in record["messages"]]
                last = max(i for i, m in enumerate(messages) if m["role"] == "user")
                messages[last]["content"] += suffix
                record["messages"] = messages
        out.append(json.dumps(record))
    path = directory / f"prompts-{n}.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def pipeline(prompts: Path, workdir: Path) -> dict:
    out = workdir / "run"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "run", str(QUICKSTART), f"input.path={prompts}",
         f"output.path={out}"],
        check=True, capture_output=True, env={**os.environ, "RAY_ADDRESS": ""},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    tokens = sum(m["tokens"] for m in counts["models"].values())
    return {"seconds": seconds, "tokens": tokens, "pairs": counts["pairs"]}


def script(prompts: Path, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(prompts), str(threads), str(QUICKSTART)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[36, 360])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.prompts:
            prompts = prompts_file(n, Path(tmp))
            a = pipeline(prompts, Path(tmp) / f"run-{n}")
            b = script(prompts, args.threads)
            print(f"{n} prompts")
            print(
                f"  prefgen run               {a['seconds']:7.1f}s  {a['tokens']:7d} tokens  {a['pairs']} pairs"
            )
            print(
                f"  same stages, one process  {b['seconds']:7.1f}s  {b['tokens']:7d} tokens  {b['pairs']} pairs  ({args.threads} threads)"
            )
            print(
                f"  wall ratio run / script   {a['seconds'] / b['seconds']:7.2f}   tokens equal: {a['tokens'] == b['tokens']}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
