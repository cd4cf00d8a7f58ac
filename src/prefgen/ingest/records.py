"""Ingest: prompt files -> one validated row per prompt; bad records become rejects, never crashes.

Input records come from JSONL (one JSON object per line) or Parquet files at any fsspec URL.
A record holds a `prompt` string or chat `messages`, plus optional `id`, `domain`, `reference`
and any other fields (kept as `meta`). Each valid prompt gets a stable id: its own `id`, or a
hash of its normalized messages.

Exact duplicates (same normalized messages) are rejected as `duplicate`; the first occurrence
in input order wins, so the same input always keeps the same copy.

Hostile input is rejected here, on the driver, with a reason, because everything kept is
written later where a bad value would kill the run: what a kept value may be is
`prefgen.ingest.json_safe` (surrogates, nesting, big integers, NaN, duplicate keys), how a
Parquet row becomes a record `prefgen.ingest.parquet_input`. JSONL is UTF-8 (a leading BOM and
CRLF line ends are accepted; a UTF-16 file is named as such). `id`, `domain` and `reference`
are text, so a number there is kept as its literal digits. Reasons quote at most a short,
escaped piece of the input, and `raw` is cut to `MAX_RAW_CHARS` once a record is parsed, so a
huge line costs memory only while it is read.
"""

from __future__ import annotations

import decimal
import io
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from prefgen.data.rows import MAX_RAW_CHARS, new_row, reject, stable_hash
from prefgen.ingest.first_seen import FirstSeen
from prefgen.ingest.json_safe import (
    check_json_safe,
    clean,
    decode_json,
    number_text,
    string_reason,
)
from prefgen.ingest.parquet_input import parquet_records

ROLES = ("system", "user", "assistant")
# The domain of a prompt that names none: source defaults and domain taggers fill only these.
DEFAULT_DOMAIN = "general"
MAX_REASON_CHARS = 500
_PROMPT_FIELDS = ("prompt", "messages", "domain", "reference", "id")
_RECORD = "_record"  # a Parquet row's values, from read_records to parse_record (never encoded)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_READ_BYTES = 1 << 20
_FILE_BITS = 40  # an owner position packs (file number, index in file) into one int64


# ---------------------------------------------------------------- reading files


def read_records(data: bytes | BinaryIO, path: str, fmt: str) -> Iterator[dict[str, Any]]:
    """One input file (its bytes, or a seekable binary file read a piece at a time) -> one raw
    row per non-blank line (JSONL) or row (Parquet).

    Bad UTF-8 and unreadable Parquet become rejected rows here; nothing raises.
    """
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    kind = fmt if fmt != "auto" else ("parquet" if str(path).endswith(".parquet") else "jsonl")
    if kind != "parquet":
        yield from _jsonl_rows(file, path)
        return
    for i, preview, record, reason in parquet_records(file, _PROMPT_FIELDS):
        row = new_row(path, i, clean(preview, MAX_RAW_CHARS))
        if reason:
            yield _reject(row, reason)
        else:
            row[_RECORD] = record
            yield row


def _jsonl_rows(file: BinaryIO, path: str) -> Iterator[dict[str, Any]]:
    not_utf8 = None
    for i, line in _lines(file):
        if i == 0 and line.startswith(_UTF16_BOMS):
            # A UTF-16 file splits on b"\n" into lines of stray NULs: say why once per line.
            not_utf8 = (
                "invalid_utf8: the file starts with a UTF-16/32 byte order mark; "
                "re-encode it as UTF-8"
            )
        elif i == 0 and line.startswith(_UTF8_BOM):  # editors on Windows write one; harmless
            line = line[len(_UTF8_BOM) :]
        if line.endswith(b"\r"):  # CRLF files
            line = line[:-1]
        if not line.strip():
            continue
        if not_utf8:
            yield _reject(new_row(path, i, line.decode("utf-8", "replace")), not_utf8)
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _reject(
                new_row(path, i, line.decode("utf-8", "replace")),
                f"invalid_utf8: {exc.reason} at byte {exc.start}",
            )
            continue
        yield new_row(path, i, text)


def _lines(file: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Lines numbered as data.split(b"\\n") would, read `_READ_BYTES` at a time: memory holds
    one piece of the file and the line being read, never the whole file."""
    i, pending = 0, []
    while chunk := file.read(_READ_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            line, pending = b"".join(pending), []
            yield i, line
            i, start = i + 1, end + 1
        pending.append(chunk[start:])  # a line longer than a piece: joined once, at its end
    yield i, b"".join(pending)


# ---------------------------------------------------------------- parsing records


def parse_record(
    row: dict[str, Any], max_prompt_chars: int, tests_field: str = "tests"
) -> dict[str, Any]:
    """Validate and normalize one raw record in place; sets status/reason on failure.

    The record's own fields beyond the prompt go to `extra` (JSON, read back at the sink);
    `tests_field`, when present, is also lifted into the typed `tests` column for the code
    verifier."""
    record = row.pop(_RECORD, None)
    if row["status"] != "ok":
        return row
    if record is None:
        record, reason = decode_json(row["raw"])
        if reason:
            return _reject(row, reason)
    fields, reason = _validate(record, max_prompt_chars)
    if reason:
        return _reject(row, reason)
    meta = fields.pop("meta")
    row.update(fields)
    row["extra"] = json.dumps(meta, ensure_ascii=False) if meta else None
    row["tests"], row["tests_are_code"] = lift_tests(meta.get(tests_field))
    row["raw"] = row["raw"][:MAX_RAW_CHARS]  # parsed: keep only a preview for later rejects
    return row


def _validate(record: Any, max_prompt_chars: int) -> tuple[dict[str, Any], str | None]:
    """A decoded record -> the row fields it fills, or the reason it is rejected."""
    if not isinstance(record, dict):
        return {}, f"not_an_object: got {type(record).__name__}"
    messages, error = _messages(record)
    if error:
        return {}, error
    chars = sum(len(m["content"]) for m in messages)
    if chars > max_prompt_chars:
        return {}, f"too_long: {chars} chars > ingest.max_prompt_chars={max_prompt_chars}"
    chat = record.get("messages") is not None
    for i, m in enumerate(messages):
        reason = string_reason(m["content"], f"messages[{i}].content" if chat else "prompt")
        if reason:
            return {}, reason
    text = {}
    for key in ("domain", "reference", "id"):
        text[key], error = _text_field(record, key)
        if error:
            return {}, error
    meta = {k: v for k, v in record.items() if k not in _PROMPT_FIELDS}
    reason = check_json_safe(meta, "meta") if meta else None
    if reason:
        return {}, reason
    own_id = text["id"] not in (None, "")
    return {
        "messages": messages,
        "domain": text["domain"] if text["domain"] is not None else DEFAULT_DOMAIN,
        "reference": text["reference"],
        "meta": meta,
        "id": text["id"] if own_id else "p-" + stable_hash(_normalized(messages)),
    }, None


def lift_tests(value: Any) -> tuple[list[str] | None, bool | None]:
    """A record's tests as (strings, is_code): a list of statements (or a JSON string of one)
    -> (statements, False); one string of test code -> ([code], True); absent -> (None, None).
    Anything else -> ([], False): present but unusable, which the verifier reports."""
    if value is None or value == "" or value == []:
        return None, None
    if isinstance(value, str) and value.lstrip().startswith("["):
        decoded, reason = decode_json(value)
        if not reason and isinstance(decoded, list):
            value = decoded
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value), False
    return [], False


def _text_field(record: dict, key: str) -> tuple[str | None, str | None]:
    """id, domain, reference: text, whatever scalar they were given as (numbers keep their
    literal digits)."""
    value = record.get(key)
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, decimal.Decimal)):
        return None, f"wrong_type: {key} must be a string, got {type(value).__name__}"
    text = number_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"not_finite: {key} is {clean(text, 40)}, not a finite number"
    return text, string_reason(text, key)


def _messages(record: dict) -> tuple[list[dict] | None, str | None]:
    if "messages" in record and record["messages"] is not None:
        raw = record["messages"]
        if not isinstance(raw, list) or not raw:
            return None, "wrong_type: messages must be a non-empty list"
        messages = []
        for m in raw:
            if (
                not isinstance(m, dict)
                or not isinstance(m.get("content"), str)
                or m.get("role") not in ROLES
            ):
                return (
                    None,
                    "wrong_type: each message needs role (system|user|assistant) and string content",
                )
            messages.append({"role": m["role"], "content": m["content"]})
        if messages[-1]["role"] != "user":
            return None, "bad_messages: the last message must be from the user"
        if not any(m["content"].strip() for m in messages if m["role"] == "user"):
            return None, "empty_prompt"
        return messages, None
    if "prompt" not in record:
        return None, "missing_prompt: need 'prompt' or 'messages'"
    prompt = record["prompt"]
    if not isinstance(prompt, str):
        return None, f"wrong_type: prompt must be a string, got {type(prompt).__name__}"
    if not prompt.strip():
        return None, "empty_prompt"
    return [{"role": "user", "content": prompt}], None


def _normalized(messages: list[dict]) -> list[list[str]]:
    return [[m["role"], " ".join(m["content"].split()).lower()] for m in messages]


# ---------------------------------------------------------------- helpers


def _reject(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """An ingest reject whose reason and raw can always be written (UTF-8, bounded)."""
    row.pop(_RECORD, None)
    row["raw"] = clean(row["raw"] or "", MAX_RAW_CHARS)
    return reject(row, "ingest", clean(" ".join(reason.split()), MAX_REASON_CHARS))


# ---------------------------------------------------------------- ingest


def ingest(
    files: Iterable[tuple[str, bytes | BinaryIO]],
    fmt: str,
    max_prompt_chars: int,
    dedup: bool,
    limit: int | None = None,
    tests_field: str = "tests",
) -> Iterator[dict[str, Any]]:
    """(path, bytes or binary file) of each input file, in order -> validated rows, rejects
    included, one at a time.

    Runs on the driver, before any model loads: parsing is cheap next to generation (COIG-P's
    92k prompts parse in seconds), and one pass in input order makes dedup deterministic:
    the first occurrence of a prompt wins, whatever the cluster's timing. It streams: what it
    remembers is 16 bytes per kept prompt and id (`FirstSeen`), never the rows.
    """
    prompts, ids = FirstSeen(), FirstSeen()
    names: list[str] = []
    count = 0
    for path, data in files:
        names.append(path)
        for row in read_records(data, path, fmt):
            if limit is not None and count >= limit:
                return
            count += 1
            row = parse_record(row, max_prompt_chars, tests_field)
            here = ((len(names) - 1) << _FILE_BITS) + row["index"]
            if dedup and row["status"] == "ok":
                owner = prompts.claim(_key(_normalized(row["messages"])), here)
                if owner != here:
                    _reject(row, f"duplicate: same prompt as {_position(names, owner)}")
            if row["status"] == "ok":
                owner = ids.claim(_key(row["id"]), here)
                if owner != here:  # one id, two different prompts: pairs would be ambiguous
                    _reject(
                        row,
                        f"duplicate_id: id {row['id']!r} already used by {_position(names, owner)}",
                    )
            yield row


def _key(value: Any) -> int:
    return int(stable_hash(value), 16)


def _position(names: list[str], owner: int) -> str:
    file, index = divmod(owner, 1 << _FILE_BITS)
    return f"{names[file]}#{index}"
