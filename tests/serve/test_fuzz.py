"""Property-based fuzzing of the live endpoint from its own OpenAPI schema (schemathesis).

For every operation in http://127.0.0.1:PORT/openapi.json, schemathesis generates requests
that fit the schema (positive) and requests that break it (negative: wrong types, missing
fields, out-of-range values). Whatever arrives, the answer must not be a 5xx, its status must be
one the schema documents, and its body must match the documented schema for that status.

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized
(a fixed seed), no example database. Set ordering inside the generators follows Python's hash
seed, so to replay a run exactly fix it too: PYTHONHASHSEED=0 gives the same requests and the
same statuses on every run. Runs the open app only: the strict app
adds nothing but a 401 in front of the same routes (test_bad_requests.py covers it).

    PYTHONHASHSEED=0 .venv/bin/python -m pytest tests/serve/test_fuzz.py -q -s
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskip)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 20  # per operation and mode: ~7 operations x 2 modes x 20 requests in ~20-40 s
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
pytestmark = pytest.mark.e2e  # every test fuzzes the live Serve app


@pytest.fixture(scope="module")
def live_schema(server):
    return schemathesis.openapi.from_url(server + "/openapi.json")


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_every_route(live_schema):
    labels = {op.label for op in operations(live_schema)}
    assert {
        "GET /healthz",
        "GET /readyz",
        "POST /v1/score",
        "POST /v1/compare",
        "POST /v1/rank",
        "POST /v1/filter",
        "POST /get_reward",
    } <= labels


def fuzz_operation(base_url: str, operation, mode) -> dict[int, int]:
    """Run the bounded, derandomized examples of one operation; the statuses seen, by count."""
    statuses: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case):
        response = case.call(base_url=base_url, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    fuzz()
    return statuses


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_fuzzed_requests_get_documented_non_5xx_answers(server, live_schema, mode):
    seen: dict[str, dict[int, int]] = {}
    for operation in operations(live_schema):
        try:
            seen[operation.label] = fuzz_operation(server, operation, mode)
        except Unsatisfiable:  # nothing to break in a request without inputs (GET /healthz)
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    print(f"\n{mode} statuses per operation: {seen}")
    posts = [label for label in seen if label.startswith("POST")]
    assert len(posts) == 5 and all(seen.values()), f"an operation got no request: {seen}"
