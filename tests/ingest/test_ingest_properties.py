"""Property tests: hostile JSONL lines and Parquet tables through ingest and the in-flight encoding.

Whatever the input, read_records + parse_record + to_table (and a Parquet shard, and the
rejects table) must hold: no exception escapes, every record is accounted for (one row per
non-blank line or Parquet row, numbered in order), every reject names a known reason, and
every accepted row is plain JSON (UTF-8, int64, finite, bounded depth) that comes back from
Arrow unchanged. The generated values reach for what broke runs before: unpaired surrogates,
deep nesting, integers past int64 and past Python's 4300-digit limit, NaN, duplicate keys,
invalid UTF-8, BOMs, CRs, NULs, binary prompt columns and odd Arrow types.
"""

from __future__ import annotations

import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from prefgen.data.rows import MAX_RAW_CHARS, prompt_meta, to_rows, to_table
from prefgen.data.schema import REJECT_SCHEMA
from prefgen.ingest.records import parse_record, read_records
from prefgen.run.sink import split_tables

MAX_CHARS = 200
# Every reason ingest may give: the part before the first ":".
REASONS = {
    "bad_json",
    "not_an_object",
    "missing_prompt",
    "empty_prompt",
    "wrong_type",
    "bad_messages",
    "too_long",
    "invalid_utf8",
    "invalid_unicode",
    "too_deep",
    "too_big_int",
    "not_finite",
    "duplicate_key",
    "unreadable_parquet",
    "unreadable_value",
}
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- JSON values and lines

SURROGATE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.lists(st.one_of(st.text(max_size=6), SURROGATE, st.just("\x00")), max_size=3).map("".join)
INTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
)
LEAF = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
VALUES = st.recursive(
    LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
    max_leaves=12,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "human"]),
            "content": st.one_of(TEXT, VALUES),
        }
    ),
    max_size=3,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.one_of(TEXT, TEXT, VALUES),
        "messages": st.one_of(MESSAGES, VALUES),
        "id": st.one_of(TEXT, INTS, VALUES),
        "domain": st.one_of(TEXT, VALUES),
        "reference": st.one_of(TEXT, INTS, st.floats(), VALUES),
    },
)
RECORDS = st.one_of(
    st.builds(lambda f, meta: {**meta, **f}, FIELDS, st.dictionaries(TEXT, VALUES, max_size=3)),
    VALUES,  # not an object
)


def _splice(record: bytes, value: bytes) -> bytes:
    """`value` as one more member of the object in `record` (raw bytes, any JSON)."""
    if not record.startswith(b"{"):
        return value
    rest = record[1:]
    return b'{"s": ' + value + (rest if rest.lstrip().startswith(b"}") else b", " + rest)


@st.composite
def lines(draw) -> bytes:
    record = draw(RECORDS)
    how = draw(st.sampled_from(["ascii", "utf8", "cesu"]))
    text = json.dumps(record, ensure_ascii=how == "ascii")  # NaN, Infinity included
    line = text.encode("utf-8", "surrogatepass" if how == "cesu" else "backslashreplace")
    mutation = draw(
        st.sampled_from(
            ["none", "none", "deep", "big_int", "dup_key", "cut", "nul", "cr", "bom", "bytes"]
        )
    )
    if mutation == "deep":
        n = draw(st.sampled_from([1, 62, 63, 64, 65, 990, 1000, 5000, 50_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"k": ', b"}")]))
        line = _splice(line, opener * n + b"1" + closer * n)
    elif mutation == "big_int":
        digits = draw(st.sampled_from([18, 19, 20, 4300, 4301, 10_000]))
        line = _splice(line, draw(st.sampled_from([b"", b"-"])) + b"9" * digits)
    elif mutation == "dup_key":
        line = _splice(line, b'1, "s": 2')
    elif mutation == "cut":
        line = line[: draw(st.integers(0, len(line)))]
    elif mutation == "nul":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + b"\x00" + line[at:]
    elif mutation == "cr":
        line += b"\r"
    elif mutation == "bom":
        line = b"\xef\xbb\xbf" + line
    elif mutation == "bytes":
        line = draw(st.binary(max_size=40))
    return line.replace(b"\n", b" ")


def _non_blank(line: bytes) -> bytes:
    """What the JSONL spec counts as blank (after a BOM and a CR) is skipped: avoid it here."""
    body = line.removeprefix(b"\xef\xbb\xbf").removesuffix(b"\r")
    return line if body.strip() else b"#" + line


# ---------------------------------------------------------------- what must hold


def _walk(value):
    """(value, depth) of every part, containers counting 1 (iterative: any depth is fine)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        yield v, d
        if isinstance(v, (dict, list)):
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))


def _assert_plain_json(value) -> None:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)  # NaN/inf would raise
    text.encode("utf-8")  # a surrogate would raise
    assert json.loads(text) == value  # no tuple, no non-str key, nothing JSON changes
    for part, _ in _walk(value):
        if isinstance(part, int) and not isinstance(part, bool):
            assert -(2**63) <= part < 2**63, part  # what Arrow's int64 holds


def _check(rows: list[dict], expected_indices: list[int]) -> None:
    assert [r["index"] for r in rows] == expected_indices
    for row in rows:
        assert row["status"] in ("ok", "rejected")
        assert len(row["raw"] or "") <= MAX_RAW_CHARS
        if row["status"] == "rejected":
            assert row["stage"] == "ingest" and row["reason"], row
            assert row["reason"].split(":")[0] in REASONS, row["reason"]
            continue
        assert row["messages"] and all(isinstance(m["content"], str) for m in row["messages"])
        kept = {
            **{k: row[k] for k in ("id", "domain", "reference", "messages")},
            "meta": prompt_meta(row),
        }
        _assert_plain_json(kept)
        assert max(d for _, d in _walk(prompt_meta(row))) <= 64
    # the pipeline's own writers: the in-flight shard (rejects included) and the rejects table
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf)
    back = to_rows(pq.read_table(io.BytesIO(buf.getvalue())))
    assert [b for b in back if b["status"] == "ok"] == [r for r in rows if r["status"] == "ok"]
    rejects = split_tables(back)["rejects"]
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), io.BytesIO())


@SETTINGS
@given(st.lists(lines(), min_size=1, max_size=5), st.sampled_from([b"", b"\n", b"\r\n"]))
def test_hostile_jsonl_lines(raw_lines, end):
    body = [_non_blank(line) for line in raw_lines]
    data = b"\n".join(body) + end
    rows = [parse_record(r, MAX_CHARS) for r in read_records(data, "h.jsonl", "jsonl")]
    _check(rows, list(range(len(body))))


# ---------------------------------------------------------------- Parquet tables


def _not_utf8(values: list) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())


# (Arrow type, values): a meta column of each kind a dataset export can carry
META_COLUMNS = {
    "ts_s": (pa.timestamp("s"), st.integers(-(2**40), 2**40)),  # past year 9999 too
    "ts_tz": (pa.timestamp("us", tz="UTC"), st.integers(-(2**50), 2**50)),
    "date": (pa.date32(), st.integers(-(10**6), 2_900_000)),
    "duration": (pa.duration("ms"), st.integers(-(2**40), 2**40)),
    "decimal": (pa.decimal128(38, 2), st.decimals(-(10**30), 10**30, places=2, allow_nan=False)),
    "map": (
        pa.map_(pa.string(), pa.int64()),
        st.lists(st.tuples(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1)), max_size=2),
    ),
    "struct": (
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
        st.fixed_dictionaries({"a": st.integers(-(2**63), 2**63 - 1), "b": st.text(max_size=3)}),
    ),
    "binary": (pa.binary(), st.binary(max_size=4)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float": (pa.float64(), st.floats()),
    "nested": (
        pa.list_(pa.list_(pa.int64())),
        st.lists(st.lists(st.integers(-5, 5), max_size=2), max_size=2),
    ),
    "text": ("not_utf8", st.binary(max_size=4)),
}
PROMPT_KINDS = ["string", "string", "large_string", "binary", "int64", "dictionary"]


@st.composite
def parquet_files(draw):
    n = draw(st.integers(1, 10))
    kind = draw(st.sampled_from(PROMPT_KINDS))
    prompts = draw(
        st.lists(
            st.one_of(st.none(), st.text(max_size=8).map(str.encode), st.binary(max_size=8)),
            min_size=n,
            max_size=n,
        )
    )
    if kind == "int64":
        prompt = pa.array([draw(st.integers(-5, 5)) for _ in range(n)], pa.int64())
    elif kind == "binary":
        prompt = pa.array(prompts, pa.binary())
    elif kind == "large_string":
        prompt = pa.array(prompts, pa.large_binary()).view(pa.large_string())
    elif kind == "dictionary":
        text = [None if p is None else p.decode("utf-8", "replace") for p in prompts]
        prompt = pa.array(text, pa.string())
        prompt = prompt.dictionary_encode()
    else:
        prompt = _not_utf8(prompts)
    columns, names = [prompt], ["prompt"]
    for name in draw(st.lists(st.sampled_from(sorted(META_COLUMNS)), max_size=3, unique=True)):
        kind_type, values = META_COLUMNS[name]
        data = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
        if kind_type == "not_utf8":
            columns.append(_not_utf8(data))
        else:
            columns.append(pa.array(data, kind_type))
        names.append(name)
    if draw(st.booleans()) and len(names) > 1 and draw(st.integers(0, 9)) == 0:
        names[-1] = "prompt"  # a duplicate column name
    table = pa.Table.from_arrays(columns, names=names)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=draw(st.integers(1, n)), compression="none")
    data = bytearray(buf.getvalue())
    meta = pq.read_metadata(io.BytesIO(bytes(data)))
    if draw(st.integers(0, 4)) == 0:  # garbage over one row group's first column chunk
        column = meta.row_group(draw(st.integers(0, meta.num_row_groups - 1))).column(0)
        start = column.dictionary_page_offset or column.data_page_offset
        data[start : start + column.total_compressed_size] = b"\xab" * column.total_compressed_size
    return bytes(data), kind, prompts, n


@settings(SETTINGS, max_examples=80)
@given(parquet_files())
def test_hostile_parquet_tables(case):
    data, kind, prompts, n = case
    rows = [parse_record(r, MAX_CHARS) for r in read_records(data, "h.parquet", "auto")]
    _check(rows, list(range(n)))
    for row, prompt in zip(rows, prompts):
        if row["status"] != "ok":
            continue
        # only a string column is text, and its text is exactly what was written (decoding
        # raises here if ingest accepted bytes that are not UTF-8)
        assert kind in ("string", "large_string", "dictionary"), (kind, row)
        errors = "replace" if kind == "dictionary" else "strict"  # written already decoded
        assert row["messages"][0]["content"] == prompt.decode("utf-8", errors)


@pytest.mark.parametrize(
    "name,found",
    [
        ("surrogate escape", lambda line: re.search(rb"\\ud[89a-f]", line)),
        ("surrogate as CESU-8 bytes", lambda line: re.search(rb"\xed[\xa0-\xbf]", line)),
        ("1000 levels", lambda line: b"[" * 1000 in line or b'{"k": ' * 1000 in line),
        ("past 4300 digits", lambda line: b"9" * 4301 in line),
        ("duplicate key", lambda line: b'"s": 1, "s": 2' in line),
    ],
)
def test_strategies_reach_the_odd_values(name, found):
    """The line generator does produce what this file is about (a guard on the test itself)."""
    find(lines(), found, settings=settings(max_examples=5000, database=None, deadline=None))
