"""Ingest without Ray: record parsing and validation, file reading, deterministic dedup."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.data.rows import decode_batch, encode_batch, new_row
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
    assert row["meta"] == {}


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
    assert "prompt" not in row["meta"]


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
    assert row["meta"] == {"source": "unit", "tags": ["a"]}
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
    assert parsed[1]["meta"] == {"n": 2}
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
    rows = ingest([("a.jsonl", data), ("b.jsonl", data.replace(b"p", b"q"))], "jsonl", MAX, True)
    assert [(r["source"], r["index"]) for r in rows] == [("a.jsonl", i) for i in range(5)] + [
        ("b.jsonl", i) for i in range(5)
    ]
    limited = ingest([("a.jsonl", data), ("b.jsonl", data)], "jsonl", MAX, True, limit=7)
    assert len(limited) == 7 and limited[-1]["source"] == "b.jsonl"
    assert ingest([("e.jsonl", b"\n\n")], "jsonl", MAX, True) == []


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
        rows = ingest([("a.jsonl", a), ("b.jsonl", b)], "jsonl", MAX, dedup=True)
        assert [r["status"] for r in rows] == ["ok", "ok", "rejected", "rejected"]
        assert rows[2]["reason"] == "duplicate: same prompt as a.jsonl#0"
        assert rows[3]["reason"] == "duplicate: same prompt as a.jsonl#1"
    kept = ingest([("a.jsonl", a), ("b.jsonl", b)], "jsonl", MAX, dedup=False)
    # without dedup the copies pass, but they share an id, so the second is still refused
    assert [r["reason"] for r in kept][2:] == [
        f"duplicate_id: id {kept[0]['id']!r} already used by a.jsonl#0",
        f"duplicate_id: id {kept[1]['id']!r} already used by a.jsonl#1",
    ]


def test_duplicate_explicit_ids_are_rejected():
    data = b'{"id": "q1", "prompt": "first"}\n{"id": "q1", "prompt": "second, different"}\n'
    rows = ingest([("p.jsonl", data)], "jsonl", MAX, dedup=True)
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
    whole = ingest([("f", (DATA / "bad_prompts.jsonl").read_bytes())], "jsonl", MAX, True)
    dups = [(r["index"], r["reason"]) for r in whole if (r["reason"] or "").startswith("dup")]
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
    (back,) = decode_batch(encode_batch([row]))
    assert back == row
