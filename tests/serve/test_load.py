"""Bounded load and overload against the live endpoint (real HTTP on 127.0.0.1).

1. A couple of thousand valid requests from 64 concurrent clients on the open app (queue 128,
   so nothing needs shedding): no 5xx other than a 503 carrying Retry-After, and most succeed.
2. The strict app (2 in flight, a queue of 1) under 48 clients: it must shed with 503 +
   Retry-After, answer the rest with 200, nothing else, and serve normally right after.

Both print the status histogram and p50/p99 latency; no timing is asserted (2 shared cores).
The client is bench/serve_load.py's, so the test also keeps the bench honest.
PREFGEN_LOAD_REQUESTS=N overrides the request count of the first test.

    .venv/bin/python -m pytest tests/serve/test_load.py -q -s
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from conftest import ROOT

from serve.endpoint import AUTH, RETRY_AFTER_S, TOKEN, assert_still_serving

_spec = importlib.util.spec_from_file_location("serve_load", ROOT / "bench" / "serve_load.py")
serve_load = sys.modules.setdefault("serve_load", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(serve_load)  # registered first: its dataclasses look themselves up

pytestmark = pytest.mark.e2e  # every test drives the live Serve apps

REQUESTS = int(os.environ.get("PREFGEN_LOAD_REQUESTS", "2000"))


def report(label: str, result) -> None:
    print(
        f"\n{label}: {result.total} requests in {result.wall_s:.1f} s "
        f"({result.total / result.wall_s:.0f}/s); statuses {result.histogram()}; "
        f"200s p50 {result.percentile_ms(0.5):.0f} ms, p99 {result.percentile_ms(0.99):.0f} ms; "
        f"Retry-After on 503: {dict(result.retry_after)}"
    )


def assert_only_ok_or_shed(result) -> None:
    """200 or a deliberate 503 (with Retry-After); no other status, no connection error."""
    unexpected = {s: n for s, n in result.statuses.items() if s not in (200, 503)}
    assert not unexpected, (unexpected, result.bodies_5xx)
    assert None not in result.retry_after, f"a 503 without Retry-After: {result.retry_after}"


def test_load_gets_no_server_errors(server):
    result = serve_load.run_load(server, REQUESTS, clients=64)
    report("load, open app, 64 clients", result)
    assert result.total == REQUESTS
    assert_only_ok_or_shed(result)
    assert result.statuses.get(200, 0) >= REQUESTS // 2, result.histogram()
    assert_still_serving(server)


def test_overload_sheds_with_503_and_retry_after_then_recovers(server):
    base = server + "/strict"
    # 4 items per request keep each in flight long enough for the queue of one to overflow
    result = serve_load.run_load(base, 300, clients=48, token=TOKEN, items_per_request=4)
    report("overload, strict app (2 in flight, queue 1), 48 clients", result)
    assert_only_ok_or_shed(result)
    assert result.statuses.get(503, 0) >= 1, result.histogram()
    assert result.statuses.get(200, 0) >= 2, result.histogram()
    # every 503 carried the configured Retry-After, none came without one
    assert dict(result.retry_after) == {str(RETRY_AFTER_S): result.statuses[503]}
    assert all("Traceback" not in body for _, body in result.bodies_5xx)
    assert_still_serving(base, headers=AUTH)
