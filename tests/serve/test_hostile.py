"""Hostile JSON bodies against the live endpoint, generated with hypothesis.

test_fuzz.py generates requests from the OpenAPI schema; this module generates what a schema
does not describe: bodies nested deeper than the parser allows, lists of up to 100,000 entries,
strings of up to 1.1 million characters (past the open app's 1 MB body cap), wrong types in every
field, unknown keys, NaN and huge numbers, and text with lone surrogates (escaped in the JSON, or
raw, which makes the body invalid UTF-8), sent with and without a Content-Length. Whatever
arrives, the endpoint must answer with a result or a 4xx carrying a message, never a 5xx, within
a hang guard of HANG_S seconds (not a speed target), and keep answering /healthz.

Bounded and reproducible: EXAMPLES requests, derandomized, no example database. The open app
only (its queue of 128 cannot fill from one client, so no 503 is expected; the strict app adds
nothing but a 401 in front of the same routes).

    .venv/bin/python -m pytest tests/serve/test_hostile.py -q -s
"""

from __future__ import annotations

import json
import time
from collections import Counter

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.endpoint import MAX_BODY_MB, assert_still_serving

EXAMPLES = 150  # about a minute on 2 busy cores; every request also probes /healthz
HANG_S = 30.0

# The result key each route answers 200 with.
ROUTES = {
    "/v1/score": "rewards",
    "/v1/compare": "margin",
    "/v1/rank": "order",
    "/v1/filter": "results",
    "/get_reward": "rewards",
}

# -- strings and values ----------------------------------------------------------------------

EDGE_CHARS = [
    "\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "\u0301", "\uffff", "\U0010ffff",
    "\U0001f600", "中", "\\", '"', "\n",
]  # fmt: skip
chars = st.one_of(
    st.characters(),  # any code point but surrogates
    st.characters(categories=["Cs"]),  # lone surrogates
    st.sampled_from(EDGE_CHARS),
)
short_text = st.text(chars, max_size=12)
# Long strings are a character repeated: cheap to generate at any size. 399-401 and 2001 sit at
# the open app's max_chars and max_total_chars, 1.1 million past its 1 MB body cap.
lengths = st.one_of(
    st.integers(0, 40),
    st.sampled_from([399, 400, 401, 2001, 100_000, 1_100_000]),
)
long_text = st.builds(lambda c, n: c * n, chars, lengths)
text = st.one_of(short_text, long_text)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**64, -(2**63) - 1, 10**4000]),  # 4001 digits: just under the 4300 limit
    st.floats(allow_nan=True, allow_infinity=True),
    short_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(short_text, inner, max_size=4)
    ),
    max_leaves=12,
)
# A list of one value repeated: 33 and 145 are past the open app's max_texts and its 144 JSON
# values, 100,000 past everything. Clipped to about 4 MB of JSON, past the 1 MB cap.
list_sizes = st.one_of(st.integers(0, 12), st.sampled_from([33, 145, 5000, 100_000]))
short_message = st.fixed_dictionaries({"role": short_text, "content": short_text})
message = st.fixed_dictionaries({"role": text, "content": text})


def repeated(value, times: int) -> list:
    return [value] * min(times, max(1, 4_000_000 // (len(json.dumps(value)) + 2)))


def huge_list(element) -> st.SearchStrategy:
    return st.builds(repeated, element, list_sizes)


# Anything in place of a field: most often the right shape, else a wrong one.
def hostile(valid: st.SearchStrategy) -> st.SearchStrategy:
    wrong_list = huge_list(st.one_of(short_message, short_text, scalars))
    return st.one_of(valid, valid, json_values, wrong_list)


def short_or_huge(element) -> st.SearchStrategy:
    return st.one_of(st.lists(element, min_size=1, max_size=4), huge_list(element))


def shapes(field, many, text, message, number) -> dict[str, st.SearchStrategy]:
    """A body per route: each field drawn through `field` (`hostile`, or as it is) and each
    list through `many`."""
    prompt = field(st.one_of(text, many(message)))
    responses = field(many(text))
    pair = st.fixed_dictionaries({"prompt": prompt, "chosen": field(text), "rejected": field(text)})
    item = st.fixed_dictionaries({"prompt": prompt, "response": field(text)})
    return {
        "/v1/score": st.fixed_dictionaries({"items": field(many(item))}),
        "/v1/compare": st.fixed_dictionaries(
            {"prompt": prompt, "a": field(text), "b": field(text)}
        ),
        "/v1/rank": st.fixed_dictionaries({"prompt": prompt, "responses": responses}),
        "/v1/filter": st.fixed_dictionaries(
            {"pairs": field(many(pair))},
            optional={"min_margin": field(number)},
        ),
        "/get_reward": st.fixed_dictionaries(
            {"query": responses}, optional={"prompts": responses, "labels": field(json_values)}
        ),
    }


HOSTILE = shapes(hostile, short_or_huge, text, message, st.floats())  # floats() has NaN, inf
# Well-formed bodies within the limits, of awkward but valid text (NUL, BOM, RTL marks,
# combining marks, astral planes: anything but surrogates): they must be scored.
valid_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
WELL_FORMED = shapes(
    lambda valid: valid,
    lambda element: st.lists(element, min_size=1, max_size=3),
    valid_text,
    st.fixed_dictionaries({"role": valid_text, "content": valid_text}),
    st.floats(min_value=0, max_value=1e300),
)

CONTENT_TYPES = ["application/json"] * 6 + [
    "application/json; charset=utf-8",
    "application/merge-patch+json",
    "text/+json",
    "text/plain",
]


def splice_deep(raw: bytes, depth: int, kind: str) -> bytes:
    """The body with a `depth`-deep nest in front of its first value: json.dumps cannot write
    one past ~1000 levels, and past the parser's limit the body is unparseable."""
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    nest = (opening * depth + ("1" if kind == "object" else "") + closing * depth).encode()
    if not raw.startswith(b"{"):
        return nest
    rest = raw[1:]
    return b'{"x": ' + nest + (b"" if rest.startswith(b"}") else b", ") + rest


@st.composite
def hostile_requests(draw) -> dict:
    route = draw(st.sampled_from(sorted(ROUTES)))
    body = draw(st.one_of(HOSTILE[route], HOSTILE[route], WELL_FORMED[route], json_values))
    if isinstance(body, dict) and draw(st.booleans()):
        body = {**draw(st.dictionaries(short_text, json_values, max_size=3)), **body}
    # ensure_ascii escapes lone surrogates as \\ud800; without it they go out as raw bytes
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    depth = draw(st.one_of(st.none(), st.sampled_from([50, 900, 5000])))
    if depth:
        raw = splice_deep(raw, depth, draw(st.sampled_from(["list", "object"])))
    return {
        "route": route,
        "raw": raw,
        "content_type": draw(st.sampled_from(CONTENT_TYPES)),
        "chunked": draw(st.booleans()),
    }


# -- the property ----------------------------------------------------------------------------


def send(base: str, req: dict) -> tuple[requests.Response, float]:
    raw = req["raw"]
    # a generator body goes out chunked, with no Content-Length to refuse early
    data = iter([raw[i : i + 65536] for i in range(0, len(raw), 65536)]) if req["chunked"] else raw
    start = time.monotonic()
    resp = requests.post(
        base + req["route"],
        data=data,
        headers={"Content-Type": req["content_type"]},
        timeout=2 * HANG_S,
    )
    return resp, time.monotonic() - start


def assert_answered(req: dict, resp: requests.Response) -> None:
    what = f"{req['route']} ({len(req['raw'])} bytes): {resp.status_code} {resp.text[:300]}"
    assert resp.status_code < 500, what
    if resp.status_code == 200:
        assert ROUTES[req["route"]] in resp.json(), what
        return
    assert 400 <= resp.status_code < 500, what
    detail = resp.json()["detail"]  # JSON with a message, never an empty or HTML page
    assert detail, what
    if isinstance(detail, list):
        assert all(e["msg"] and {"loc", "msg", "type"} == set(e) for e in detail), what
    assert "Traceback" not in resp.text, what


def test_hostile_bodies_get_a_result_or_a_4xx_with_a_message(server):
    statuses: Counter = Counter()
    slowest = [0.0, ""]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=hostile_requests())
    def check(req):
        resp, wall_s = send(server, req)
        statuses[resp.status_code] += 1
        if wall_s > slowest[0]:
            slowest[:] = [wall_s, f"{req['route']} {len(req['raw'])} bytes -> {resp.status_code}"]
        assert_answered(req, resp)
        assert wall_s < HANG_S, f"{req['route']} took {wall_s:.1f} s"  # a hang guard only
        assert requests.get(server + "/healthz", timeout=10).json() == {"status": "ok"}

    check()
    print(f"\nhostile statuses: {dict(sorted(statuses.items()))}; slowest {slowest}")
    # the generator reached every layer: results, parse errors, validation, every bound
    assert {200, 400, 413, 415, 422} <= set(statuses), statuses
    assert MAX_BODY_MB == 1  # the 1.1-million-character strings above rely on it
    assert_still_serving(server)
