"""Ingest without Ray: record parsing and validation, file reading, deterministic dedup."""

from __future__ import annotations

import datetime
import decimal
import importlib.util
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.data.rows import MAX_RAW_CHARS, new_row, prompt_meta, to_rows, to_table
from prefgen.ingest.records import ingest, parse_record, read_records

DATA = Path(__file__).resolve().parents[1] / "fixtures"
MAX = 2000


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_bad_prompts", DATA / "make_bad_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(record) -> dict:
    """A fresh raw row holding `record` (a JSON-able value, or raw text when a str)."""
    raw = record if isinstance(record, str) else json.dumps(record)
    return {**new_row("prompts.jsonl", 0, ""), "raw": raw}


def _parse(record, max_chars: int = MAX) -> dict:
    return parse_record(_row(record), max_chars)


def _split(data: bytes, path: str = "prompts.jsonl", fmt: str = "auto") -> list[dict]:
    return list(read_records(data, path, fmt))


# ---------------------------------------------------------------- parse_record: bad records

BAD = [
    ('{"prompt": "What is 1 + 1?"', "bad_json"),
    ("not json at all", "bad_json"),
    ("", "bad_json"),
    ([{"prompt": "hi"}], "not_an_object: got list"),
    (42, "not_an_object: got int"),
    ("null", "not_an_object: got NoneType"),
    ('"just a string"', "not_an_object: got str"),
    ({"id": "x", "domain": "math"}, "missing_prompt"),
    ({"messages": None}, "missing_prompt"),
    ({"prompt": ""}, "empty_prompt"),
    ({"prompt": "  \t\n "}, "empty_prompt"),
    ({"messages": [{"role": "user", "content": "   "}]}, "empty_prompt"),
    ({"prompt": 12345}, "wrong_type: prompt must be a string, got int"),
    ({"prompt": ["What is", "1 + 1?"]}, "wrong_type: prompt must be a string, got list"),
    ({"prompt": None}, "wrong_type: prompt must be a string, got NoneType"),
    ({"messages": "What is 1 + 1?"}, "wrong_type: messages"),
    ({"messages": {"role": "user", "content": "hi"}}, "wrong_type: messages"),
    ({"messages": []}, "wrong_type: messages"),
    ({"messages": [{"role": "human", "content": "hi"}]}, "wrong_type: each message"),
    ({"messages": [{"role": "user"}]}, "wrong_type: each message"),
    ({"messages": [{"role": "user", "content": 3}]}, "wrong_type: each message"),
    ({"messages": ["hi"]}, "wrong_type: each message"),
    (
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
        "bad_messages",
    ),
    ({"messages": [{"role": "system", "content": "Be brief."}]}, "bad_messages"),
    ({"prompt": "hi", "domain": {"name": "math"}}, "wrong_type: domain must be a string, got dict"),
    ({"prompt": "hi", "domain": True}, "wrong_type: domain must be a string, got bool"),
    ({"prompt": "hi", "reference": [4]}, "wrong_type: reference must be a string, got list"),
    ({"prompt": "hi", "id": {"a": 1}}, "wrong_type: id must be a string, got dict"),
    ({"prompt": "x" * (MAX + 1)}, f"too_long: {MAX + 1} chars > ingest.max_prompt_chars={MAX}"),
    (
        {
            "messages": [
                {"role": "system", "content": "s" * 1500},
                {"role": "user", "content": "u" * 501},
            ]
        },
        "too_long: 2001 chars",
    ),
    # hostile values: each would crash a later writer if kept (make_bad_prompts.py has more)
    ({"prompt": "a\ud800b"}, "invalid_unicode: unpaired surrogate U+D800 at char 1 in prompt"),
    (
        {"messages": [{"role": "user", "content": "\udc00"}]},
        "invalid_unicode: unpaired surrogate U+DC00 at char 0 in messages[0].content",
    ),
    (
        {"prompt": "hi", "id": "x\udfff"},
        "invalid_unicode: unpaired surrogate U+DFFF at char 1 in id",
    ),
    (
        {"prompt": "hi", "domain": "\ud83d"},
        "invalid_unicode: unpaired surrogate U+D83D at char 0 in domain",
    ),
    (
        {"prompt": "hi", "reference": "4\ud800"},
        "invalid_unicode: unpaired surrogate U+D800 at char 1 in reference",
    ),
    (
        {"prompt": "hi", "a": [{"b": ["ok", "no\udc00"]}]},
        "invalid_unicode: unpaired surrogate U+DC00 at char 2 in meta.a[0].b[1]",
    ),
    (
        {"prompt": "hi", "\ud800k": 1},
        "invalid_unicode: unpaired surrogate U+D800 at char 0 in a key of meta",
    ),
    (
        {"prompt": "hi", "a": {"weird key": {"\udc00": 1}}},
        'invalid_unicode: unpaired surrogate U+DC00 at char 0 in a key of meta.a["weird key"]',
    ),
    ('{"prompt": "hi", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "too_deep: nesting > 64 levels"),
    (
        '{"prompt": "hi", "x": ' + '{"k": ' * 50_000 + "1" + "}" * 50_000 + "}",
        "too_deep: nesting > 64",
    ),
    ("[" * 50_000 + "]" * 50_000, "too_deep: nesting > 64 levels"),
    (
        '{"prompt": "hi", "x": ' + "[" * 64 + "]" * 64 + "}",
        "too_deep: nesting > 64 levels in meta.x",
    ),
    (
        '{"prompt": "hi", "n": ' + "9" * 5000 + "}",
        "too_big_int: meta.n is an integer of 5000 digits",
    ),
    (
        '{"prompt": "hi", "n": -' + "9" * 5000 + "}",
        "too_big_int: meta.n is an integer of 5000 digits",
    ),
    (
        '{"prompt": "hi", "n": 9223372036854775808}',
        "too_big_int: meta.n is an integer of 19 digits",
    ),
    ('{"prompt": "hi", "n": [-9223372036854775809]}', "too_big_int: meta.n[0] is an integer of 19"),
    ('{"prompt": "hi", "x": NaN}', "not_finite: meta.x is nan"),
    ('{"prompt": "hi", "x": {"y": -Infinity}}', "not_finite: meta.x.y is -inf"),
    ('{"prompt": "hi", "x": 1e999}', "not_finite: meta.x is inf"),
    ('{"prompt": "hi", "reference": NaN}', "not_finite: reference is nan, not a finite number"),
    ('{"prompt": "hi", "id": -1e400}', "not_finite: id is -1e400, not a finite number"),
    ('{"prompt": "a", "prompt": "b"}', 'duplicate_key: "prompt" appears more than once'),
    ('{"prompt": "a", "m": [{"k": 1, "k": 1}]}', 'duplicate_key: "k" appears more than once'),
    ('{"prompt": "a", "\\ud800": 1, "\\ud800": 2}', 'duplicate_key: "\\ud800" appears'),
    ('\ufeff{"prompt": "hi"}', "bad_json: a byte order mark (U+FEFF) before the record"),
    ('{"prompt": "a\x00b"}', "bad_json: Invalid control character"),
    ('{"prompt": "hi"}\x00', "bad_json: Extra data"),
]


@pytest.mark.parametrize(
    "record,prefix", BAD, ids=[p.split(":")[0] + f"-{i}" for i, (_, p) in enumerate(BAD)]
)
def test_parse_record_rejects(record, prefix):
    row = _parse(record)
    assert row["status"] == "rejected"
    assert row["stage"] == "ingest"
    assert row["reason"].startswith(prefix), row["reason"]
    assert row["messages"] == [] and row["id"] is None  # nothing half-filled


def test_parse_record_limit_is_inclusive():
    assert _parse({"prompt": "x" * MAX})["status"] == "ok"


def test_parse_record_leaves_rejected_rows_alone():
    row = {
        **_row({"prompt": "fine"}),
        "status": "rejected",
        "stage": "ingest",
        "reason": "invalid_utf8: x",
    }
    assert parse_record(row, MAX)["reason"] == "invalid_utf8: x"


# ---------------------------------------------------------------- parse_record: good records


def test_prompt_string_becomes_one_user_message():
    row = _parse({"prompt": "What is 2 + 2?"})
    assert row["status"] == "ok" and row["reason"] is None
    assert row["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert row["domain"] == "general"
    assert row["reference"] is None
    assert prompt_meta(row) == {}


def test_chat_messages_kept_with_system_turn():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    row = _parse({"messages": [{**m, "name": "dropped"} for m in messages]})
    assert row["status"] == "ok"
    assert row["messages"] == messages  # only role and content survive


def test_messages_win_over_prompt():
    row = _parse(
        {"messages": [{"role": "user", "content": "from messages"}], "prompt": "from prompt"}
    )
    assert row["messages"] == [{"role": "user", "content": "from messages"}]
    assert "prompt" not in prompt_meta(row)


def test_domain_reference_meta():
    row = _parse(
        {
            "prompt": "What is 3 * 5?",
            "domain": "math",
            "reference": 15,
            "source": "unit",
            "tags": ["a"],
        }
    )
    assert row["domain"] == "math"
    assert row["reference"] == "15" and isinstance(row["reference"], str)
    assert prompt_meta(row) == {"source": "unit", "tags": ["a"]}
    assert _parse({"prompt": "x", "reference": 2.5})["reference"] == "2.5"
    assert _parse({"prompt": "x", "reference": "4"})["reference"] == "4"
    assert _parse({"prompt": "x", "domain": None})["domain"] == "general"


def test_own_id_kept_as_string():
    assert _parse({"id": "mine-1", "prompt": "x"})["id"] == "mine-1"
    assert _parse({"id": 7, "prompt": "x"})["id"] == "7"


def test_hashed_id_is_stable_and_normalized():
    a = _parse({"prompt": "What is 2 + 2?"})["id"]
    assert a.startswith("p-") and len(a) > 2
    assert _parse({"prompt": "What is 2 + 2?"})["id"] == a  # same across calls
    assert _parse({"prompt": "  what IS 2 +\t2?\n"})["id"] == a  # whitespace / case variants
    assert _parse({"messages": [{"role": "user", "content": "WHAT is 2 + 2?"}]})["id"] == a
    assert _parse({"prompt": "What is 2 + 3?"})["id"] != a
    assert _parse({"id": "", "prompt": "What is 2 + 2?"})["id"] == a  # empty id: hashed
    # the role is part of the identity
    with_system = _parse(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "What is 2 + 2?"},
            ]
        }
    )
    assert with_system["id"] != a


# ---------------------------------------------------------------- split_records


def test_split_jsonl_indices_and_blank_lines():
    data = b'{"prompt": "a"}\n\n   \n{"prompt": "b"}\r\n{"prompt": "c"}\n'
    rows = _split(data, "dir/p.jsonl")
    assert [r["index"] for r in rows] == [0, 3, 4]
    assert [json.loads(r["raw"])["prompt"] for r in rows] == ["a", "b", "c"]
    assert all(r["status"] == "ok" and r["source"] == "dir/p.jsonl" for r in rows)


def test_split_jsonl_invalid_utf8_is_rejected():
    data = b'{"prompt": "ok"}\n{"prompt": "caf\xff\xfe"}\n{"prompt": "ok too"}'
    rows = _split(data)
    assert [r["index"] for r in rows] == [0, 1, 2]
    bad = rows[1]
    assert bad["status"] == "rejected" and bad["stage"] == "ingest"
    assert bad["reason"].startswith("invalid_utf8")
    assert "\ufffd" in bad["raw"]  # kept, readable, for the rejects table
    assert rows[0]["status"] == rows[2]["status"] == "ok"
    # parse_record does not resurrect it
    assert parse_record(bad, MAX)["reason"].startswith("invalid_utf8")


def test_split_parquet():
    table = pa.table(
        {"prompt": ["What is 1 + 1?", "What is 2 + 2?"], "reference": ["2", "4"], "n": [1, 2]}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    rows = _split(buf.getvalue(), "in/prompts.parquet")
    assert [r["index"] for r in rows] == [0, 1]
    parsed = [parse_record(r, MAX) for r in rows]
    assert [r["messages"][0]["content"] for r in parsed] == ["What is 1 + 1?", "What is 2 + 2?"]
    assert [r["reference"] for r in parsed] == ["2", "4"]
    assert prompt_meta(parsed[1]) == {"n": 2}
    # format forced, whatever the extension
    assert len(_split(buf.getvalue(), "in/prompts.bin", fmt="parquet")) == 2


def test_split_corrupt_parquet():
    rows = _split(b"PAR1 this is not parquet", "in/broken.parquet")
    assert len(rows) == 1
    assert rows[0]["status"] == "rejected" and rows[0]["stage"] == "ingest"
    assert rows[0]["reason"].startswith("unreadable_parquet")
    assert rows[0]["source"] == "in/broken.parquet" and rows[0]["index"] == 0


def test_ingest_keeps_file_order_and_limit():
    data = b"".join(b'{"prompt": "p%d"}\n' % i for i in range(5))
    rows = list(
        ingest([("a.jsonl", data), ("b.jsonl", data.replace(b"p", b"q"))], "jsonl", MAX, True)
    )
    assert [(r["source"], r["index"]) for r in rows] == [("a.jsonl", i) for i in range(5)] + [
        ("b.jsonl", i) for i in range(5)
    ]
    limited = list(ingest([("a.jsonl", data), ("b.jsonl", data)], "jsonl", MAX, True, limit=7))
    assert len(limited) == 7 and limited[-1]["source"] == "b.jsonl"
    assert list(ingest([("e.jsonl", b"\n\n")], "jsonl", MAX, True)) == []


def test_long_records_survive_splitting():
    """A JSONL line longer than rows.MAX_RAW_CHARS (2000) is still valid JSON after splitting."""
    prompt = "x" * 1990  # well under the default ingest.max_prompt_chars=8000
    rows = _split(json.dumps({"prompt": prompt}).encode())
    row = parse_record(rows[0], 8000)
    assert row["status"] == "ok", row["reason"]
    assert row["messages"][0]["content"] == prompt


# ---------------------------------------------------------------- dedup (deterministic)


def test_dedup_first_occurrence_wins_across_files():
    a = b'{"prompt": "What is 2+2?"}\n{"prompt": "Name a colour."}\n'
    b = b'{"prompt": "what is   2+2?"}\n{"prompt": "Name a colour."}\n'
    for _ in range(3):  # same input, same survivors, every time
        rows = list(ingest([("a.jsonl", a), ("b.jsonl", b)], "jsonl", MAX, dedup=True))
        assert [r["status"] for r in rows] == ["ok", "ok", "rejected", "rejected"]
        assert rows[2]["reason"] == "duplicate: same prompt as a.jsonl#0"
        assert rows[3]["reason"] == "duplicate: same prompt as a.jsonl#1"
    kept = list(ingest([("a.jsonl", a), ("b.jsonl", b)], "jsonl", MAX, dedup=False))
    # without dedup the copies pass, but they share an id, so the second is still refused
    assert [r["reason"] for r in kept][2:] == [
        f"duplicate_id: id {kept[0]['id']!r} already used by a.jsonl#0",
        f"duplicate_id: id {kept[1]['id']!r} already used by a.jsonl#1",
    ]


def test_duplicate_explicit_ids_are_rejected():
    data = b'{"id": "q1", "prompt": "first"}\n{"id": "q1", "prompt": "second, different"}\n'
    rows = list(ingest([("p.jsonl", data)], "jsonl", MAX, dedup=True))
    assert rows[0]["status"] == "ok"
    assert rows[1]["reason"] == "duplicate_id: id 'q1' already used by p.jsonl#0"


# ---------------------------------------------------------------- the bad_prompts.jsonl fixture


def test_bad_prompts_file_is_reproducible():
    gen = _load_generator()
    assert (DATA / "bad_prompts.jsonl").read_bytes() == gen.build()


def test_bad_prompts_file_through_ingest():
    gen = _load_generator()
    rows = _split((DATA / "bad_prompts.jsonl").read_bytes(), "bad_prompts.jsonl")
    rows = {r["index"]: parse_record(r, MAX) for r in rows}
    expected = {i: want for i, (want, _) in enumerate(gen.CASES) if want != gen.SKIP}
    assert set(rows) == set(expected)
    for i, want in expected.items():
        row = rows[i]
        if want in (gen.OK, "duplicate"):  # duplicates are caught across records, below
            assert row["status"] == "ok", (i, row["reason"])
        else:
            assert row["status"] == "rejected" and row["reason"].startswith(want), (
                i,
                row["reason"],
            )
    # the duplicate line normalizes to line 0's prompt
    dup = [i for i, (want, _) in enumerate(gen.CASES) if want == "duplicate"][0]
    assert rows[dup]["messages"] != rows[0]["messages"]
    assert rows[dup]["id"] == _parse({"prompt": rows[0]["messages"][0]["content"]})["id"]
    whole = list(ingest([("f", (DATA / "bad_prompts.jsonl").read_bytes())], "jsonl", MAX, True))
    dups = [
        (r["index"], r["reason"]) for r in whole if (r["reason"] or "").startswith("duplicate:")
    ]
    assert dups == [(dup, "duplicate: same prompt as f#0")]


def test_bad_prompts_too_long_line():
    gen = _load_generator()
    i = [i for i, (want, _) in enumerate(gen.CASES) if want == "too_long"][0]
    rows = {r["index"]: r for r in _split((DATA / "bad_prompts.jsonl").read_bytes())}
    reason = parse_record(rows[i], MAX)["reason"]
    assert reason.startswith("too_long"), reason


def test_encode_decode_roundtrip():
    row = _parse(
        {"prompt": "What is 2 + 2?", "domain": "math", "reference": 4, "extra": {"a": [1, 2]}}
    )
    (back,) = to_rows(to_table([row]))
    assert back == row


# ---------------------------------------------------------------- hostile values kept on purpose


def test_depth_bound_is_inclusive():
    """The record is level 1: 63 nested lists inside it make 64 levels, which are kept."""
    ok = _parse('{"prompt": "hi", "x": ' + "[" * 63 + "]" * 63 + "}")
    assert ok["status"] == "ok", ok["reason"]
    assert _parse('{"prompt": "hi", "x": ' + "[" * 64 + "]" * 64 + "}")["status"] == "rejected"


def test_int64_bounds_are_kept():
    row = _parse('{"prompt": "hi", "max": 9223372036854775807, "min": -9223372036854775808}')
    assert row["status"] == "ok", row["reason"]
    assert prompt_meta(row) == {"max": 2**63 - 1, "min": -(2**63)}
    (back,) = to_rows(to_table([row]))
    assert prompt_meta(back) == {"max": 2**63 - 1, "min": -(2**63)}


def test_text_fields_keep_number_literals():
    """id, domain and reference are text: a JSON number there keeps the digits it was written
    with (a float would round them, int() refuses past 4300 digits)."""
    big = "1267650600228229401496703205376"  # 2**100
    assert _parse(f'{{"prompt": "x", "reference": {big}}}')["reference"] == big
    huge = "7" * 5000
    assert _parse(f'{{"prompt": "x", "reference": {huge}}}')["reference"] == huge
    assert _parse('{"prompt": "x", "reference": 3.14159265358979323846}')["reference"] == (
        "3.14159265358979323846"
    )
    assert _parse('{"prompt": "x", "reference": 1.50}')["reference"] == "1.50"
    assert _parse('{"prompt": "x", "reference": -0.0}')["reference"] == "-0.0"
    assert _parse('{"prompt": "x", "id": 123456789012345678901234567890}')["id"] == (
        "123456789012345678901234567890"
    )
    assert _parse('{"prompt": "x", "domain": 5}')["domain"] == "5"


def test_valid_odd_text_is_kept_exactly():
    """A surrogate pair is one valid character; NUL and U+FFFF are valid too."""
    row = _parse(
        '{"prompt": "smile \\ud83d\\ude00 nul \\u0000 end \\uffff", "tag": "\\ud83d\\ude00"}'
    )
    assert row["status"] == "ok", row["reason"]
    assert row["messages"][0]["content"] == "smile \U0001f600 nul \x00 end \uffff"
    (back,) = to_rows(to_table([row]))
    assert back == row


def test_reasons_and_raw_are_always_writable():
    """A reason quoting input (a duplicate key) and the raw preview can go into Arrow as UTF-8."""
    row = _parse('{"prompt": "a", "\\ud800' + "k" * 100 + '": 1, "\\ud800' + "k" * 100 + '": 2}')
    assert row["reason"].startswith('duplicate_key: "\\ud800kkk')
    assert len(row["reason"]) < 120  # the key is cut to 40 chars
    table = pa.Table.from_pylist([{"reason": row["reason"], "raw": row["raw"]}])
    assert table.column("reason")[0].as_py() == row["reason"]


# ---------------------------------------------------------------- hostile files


def test_bom_crlf_and_utf16():
    bom = b'\xef\xbb\xbf{"prompt": "a"}\r\n{"prompt": "b"}\r\n\r\n'
    rows = [parse_record(r, MAX) for r in _split(bom)]
    assert [(r["index"], r["status"]) for r in rows] == [(0, "ok"), (1, "ok")]
    assert rows[0]["raw"] == '{"prompt": "a"}'  # BOM and CR gone
    # a BOM later in the file is not a file's BOM: that line is bad JSON
    late = _split(b'{"prompt": "a"}\n\xef\xbb\xbf{"prompt": "b"}')
    assert parse_record(late[1], MAX)["reason"].startswith("bad_json: a byte order mark")
    utf16 = '{"prompt": "a"}\n{"prompt": "b"}\n'.encode("utf-16")
    rows = _split(utf16)
    # b"\n" splits "\n\0": a first line, one starting with a stray NUL, and a last lone NUL
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(r["reason"].startswith("invalid_utf8: the file starts with a UTF-16") for r in rows)


def test_empty_and_blank_files_give_no_rows():
    for data in (b"", b"\n", b"  \r\n\t\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"):
        assert _split(data) == [], data


def test_latin1_file_rejects_its_non_ascii_lines():
    data = '{"prompt": "plain"}\n{"prompt": "café"}\n'.encode("latin-1")
    rows = [parse_record(r, MAX) for r in _split(data)]
    assert rows[0]["status"] == "ok"
    assert rows[1]["reason"] == "invalid_utf8: invalid continuation byte at byte 15"
    assert rows[1]["raw"] == '{"prompt": "caf\ufffd"}'


def test_huge_line_is_rejected_and_not_kept():
    """A 100 MB prompt: rejected as too_long, and after ingest only a preview stays in memory."""
    size = 100_000_000
    data = b'{"prompt": "' + b"x" * size + b'"}\n{"prompt": "small"}\n'
    tracemalloc.start()
    try:
        rows = list(ingest([("big.jsonl", data)], "jsonl", 8000, True))
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows[0]["reason"] == f"too_long: {size} chars > ingest.max_prompt_chars=8000"
    assert len(rows[0]["raw"]) == MAX_RAW_CHARS
    assert rows[1]["status"] == "ok"
    assert kept < 1_000_000, kept  # the rows hold previews, not the 100 MB line
    assert peak < 4 * size, peak  # a line, its text and its parse at most, not the file twice


# ---------------------------------------------------------------- hostile Parquet


def _parquet(table: pa.Table, **kwargs) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


def _parquet_rows(table: pa.Table, **kwargs) -> list[dict]:
    return [parse_record(r, MAX) for r in _split(_parquet(table, **kwargs), "in.parquet")]


def _not_utf8(values: list) -> pa.Array:
    """A string column holding bytes that are not UTF-8 (a view is not validated)."""
    return pa.array(values, pa.binary()).view(pa.string())


def test_parquet_invalid_utf8_loses_only_its_rows():
    prompts = _not_utf8([b"What is 1 + 1?", b"bad \xff", b"What is 2 + 2?", b"\xc3"])
    rows = _parquet_rows(pa.table({"prompt": prompts, "n": [1, 2, 3, 4]}), row_group_size=2)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["status"] for r in rows] == ["ok", "rejected", "ok", "rejected"]
    assert rows[1]["reason"] == 'invalid_utf8: column "prompt": invalid start byte at byte 4'
    assert rows[3]["reason"] == 'invalid_utf8: column "prompt": unexpected end of data at byte 0'
    assert json.loads(rows[1]["raw"]) == {"prompt": "bad \ufffd", "n": 2}  # a readable preview
    assert rows[2]["messages"][0]["content"] == "What is 2 + 2?" and prompt_meta(rows[2]) == {
        "n": 3
    }


def test_parquet_binary_prompt_is_not_text():
    for kind in (pa.binary(), pa.large_binary(), pa.binary(2)):
        (row,) = _parquet_rows(pa.table({"prompt": pa.array([b"hi"], kind)}))
        assert row["reason"] == "wrong_type: prompt must be a string, got bytes", kind
    content = pa.array([[{"role": "user", "content": b"hi"}]])
    (row,) = _parquet_rows(pa.table({"messages": content}))
    assert row["reason"].startswith("wrong_type: each message needs role")


def test_parquet_meta_types_become_json_values():
    table = pa.table(
        {
            "prompt": pa.array(["hi"]).dictionary_encode(),
            "reference": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)),
            "ts": pa.array([0], pa.timestamp("ns", tz="+05:30")),
            "day": pa.array([datetime.date(2024, 2, 29)]),
            "clock": pa.array([datetime.time(1, 2, 3)]),
            "took": pa.array([datetime.timedelta(days=1, seconds=3)]),
            "price": pa.array([decimal.Decimal("123456789012345678901234567890.5")]),
            "tags": pa.array([[(1, "x")]], pa.map_(pa.int32(), pa.string())),
            "info": pa.array([{"a": 1, "b": [1.5, None]}]),
            "big": pa.array([2**63 - 1], pa.uint64()),
            "none": pa.nulls(1),
        }
    )
    (row,) = _parquet_rows(table)
    assert row["status"] == "ok", row["reason"]
    assert row["reference"] == "1.50"
    assert prompt_meta(row) == {
        "ts": "1970-01-01T05:30:00+05:30",
        "day": "2024-02-29",
        "clock": "01:02:03",
        "took": "1 day, 0:00:03",
        "price": "123456789012345678901234567890.5",
        "tags": [[1, "x"]],
        "info": {"a": 1, "b": [1.5, None]},
        "big": 2**63 - 1,
        "none": None,
    }
    (back,) = to_rows(to_table([row]))
    assert back == row


PARQUET_BAD = [
    ({"x": pa.array([b"\x89PNG"])}, "wrong_type: meta.x is bytes, which JSON cannot hold"),
    ({"x": pa.array([2**63], pa.uint64())}, "too_big_int: meta.x is an integer outside int64"),
    ({"x": pa.array([float("nan")])}, "not_finite: meta.x is nan"),
    ({"reference": pa.array([float("inf")])}, "not_finite: reference is inf"),
    ({"x": _not_utf8([b"\xe9"])}, 'invalid_utf8: column "x"'),
    ({"x": pa.array([10**12], pa.timestamp("s"))}, 'unreadable_value: column "x": OverflowError'),
    (
        {"x": pa.StructArray.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])},
        'unreadable_value: column "x": ValueError',
    ),
    ({"x": pa.array([{"y": [1.0, float("-inf")]}])}, "not_finite: meta.x.y[1] is -inf"),
]


@pytest.mark.parametrize("columns,prefix", PARQUET_BAD, ids=[p for _, p in PARQUET_BAD])
def test_parquet_bad_values(columns, prefix):
    (row,) = _parquet_rows(pa.table({"prompt": ["hi"], **columns}))
    assert row["status"] == "rejected" and row["stage"] == "ingest"
    assert row["reason"].startswith(prefix), row["reason"]


def _nested_lists(levels: int) -> pa.Array:
    array = pa.array([1])
    for _ in range(levels):
        array = pa.ListArray.from_arrays([0, 1], array)
    return array


def _nested_structs(levels: int) -> pa.Array:
    array = pa.array([1])
    for _ in range(levels):
        array = pa.StructArray.from_arrays([array], names=["a"])
    return array


def test_parquet_nesting():
    (row,) = _parquet_rows(pa.table({"prompt": ["hi"], "x": _nested_structs(70)}))
    assert row["reason"] == "too_deep: nesting > 64 levels in meta.x"
    (row,) = _parquet_rows(pa.table({"prompt": ["hi"], "x": _nested_structs(63)}))
    assert row["status"] == "ok", row["reason"]  # the record and 63 structs: 64 levels
    (row,) = _parquet_rows(pa.table({"prompt": ["hi"], "x": _nested_structs(64)}))
    assert row["reason"] == "too_deep: nesting > 64 levels in meta.x"
    # past Parquet's own schema depth limit the file cannot be opened: each row its reject
    rows = _parquet_rows(
        pa.table({"prompt": ["a", "b", "c"], "x": _nested_lists(100).take([0] * 3)})
    )
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(r["reason"].startswith("unreadable_parquet: Parquet schema too deep") for r in rows)


def test_parquet_duplicate_columns():
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"])], ["prompt", "prompt"])
    rows = _parquet_rows(table)
    assert [r["reason"] for r in rows] == [
        'duplicate_key: column "prompt" appears more than once'
    ] * 2


def test_parquet_corrupt_row_group_loses_only_its_rows():
    data = bytearray(
        _parquet(
            pa.table({"prompt": [f"p{i}" for i in range(6)]}), row_group_size=2, compression="none"
        )
    )
    column = pq.read_metadata(io.BytesIO(bytes(data))).row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xab" * column.total_compressed_size
    rows = [parse_record(r, MAX) for r in _split(bytes(data), "in.parquet")]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["status"] for r in rows] == ["ok", "ok", "rejected", "rejected", "ok", "ok"]
    assert rows[2]["reason"].startswith("unreadable_parquet: row group 1 (rows 2-3): ")
    assert [r["messages"][0]["content"] for r in rows if r["status"] == "ok"] == [
        "p0",
        "p1",
        "p4",
        "p5",
    ]


def test_parquet_empty_and_zero_bytes():
    assert _parquet_rows(pa.table({"prompt": pa.array([], pa.string())})) == []
    (row,) = _split(b"", "in.parquet")
    assert row["reason"].startswith("unreadable_parquet: ") and row["index"] == 0


# ---------------------------------------------------------------- the Parquet corpus


def _load_parquet_generator():
    spec = importlib.util.spec_from_file_location("make_bad_parquet", DATA / "make_bad_parquet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcome(rows: list[dict]) -> list[tuple]:
    return [
        (r["index"], r["status"], r["reason"], r["messages"], prompt_meta(r), r["raw"])
        for r in rows
    ]


@pytest.mark.parametrize("name", ["bad_prompts.parquet", "bad_prompts_binary.parquet"])
def test_bad_parquet_files_through_ingest(name):
    gen = _load_parquet_generator()
    committed = [parse_record(r, MAX) for r in _split((DATA / name).read_bytes(), name)]
    # the committed file is what the script writes (bytes differ by pyarrow version: compare rows)
    assert _outcome(committed) == _outcome(
        [parse_record(r, MAX) for r in _split(gen.build(name), name)]
    )
    expected = gen.expected(name)
    assert [r["index"] for r in committed] == list(range(len(expected)))
    for row, want in zip(committed, expected):
        if want == gen.OK:
            assert row["status"] == "ok", (row["index"], row["reason"])
        else:
            assert row["status"] == "rejected" and row["reason"].startswith(want), (
                row["index"],
                want,
                row["reason"],
            )


def test_corpus_rows_encode_and_write():
    """Every row of the corpus, rejects included, goes through the in-flight encoding and a
    Parquet shard as the pipeline writes them; accepted rows come back unchanged."""
    gen = _load_parquet_generator()
    files = [("bad_prompts.jsonl", (DATA / "bad_prompts.jsonl").read_bytes())]
    files += [(name, (DATA / name).read_bytes()) for name in gen.FILES]
    rows = list(ingest(files, "auto", MAX, True))
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf)
    back = to_rows(pq.read_table(io.BytesIO(buf.getvalue())))
    assert [r for r in back if r["status"] == "ok"] == [r for r in rows if r["status"] == "ok"]
    assert all(r["reason"] for r in back if r["status"] != "ok")


def test_lines_are_numbered_as_split_whatever_the_read_size(monkeypatch):
    """Ingest reads a file a piece at a time; a line split across pieces is still one line,
    numbered as bytes.split(b"\\n") numbers it."""
    from prefgen.ingest import records

    data = b'{"prompt": "a"}\n\n{"prompt": "longer line"}\r\n{"prompt": "no newline"}'
    for size in (1, 2, 5, 16, 1 << 20):
        monkeypatch.setattr(records, "_READ_BYTES", size)
        assert list(records._lines(io.BytesIO(data))) == list(enumerate(data.split(b"\n")))
        rows = list(ingest([("f.jsonl", io.BytesIO(data))], "jsonl", MAX, True))
        assert [(r["index"], r["status"]) for r in rows] == [(0, "ok"), (2, "ok"), (3, "ok")]
