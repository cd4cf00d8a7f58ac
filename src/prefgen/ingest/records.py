"""Ingest: prompt files -> one validated row per prompt; bad records become rejects, never crashes.

Input records come from JSONL (one JSON object per line) or Parquet files at any fsspec URL.
A record holds a `prompt` string or chat `messages`, plus optional `id`, `domain`, `reference`
and any other fields (kept as `meta`). Each valid prompt gets a stable id: its own `id`, or a
hash of its normalized messages.

Exact duplicates (same normalized messages) are rejected as `duplicate`; the first occurrence
in input order wins, so the same input always keeps the same copy.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow.parquet as pq

from prefgen.data.rows import MAX_RAW_CHARS, new_row, reject, stable_hash

ROLES = ("system", "user", "assistant")
# The domain of a prompt that names none: source defaults and domain taggers fill only these.
DEFAULT_DOMAIN = "general"


def read_records(data: bytes, path: str, fmt: str) -> Iterator[dict[str, Any]]:
    """One input file's bytes -> one raw row per line (JSONL) or row (Parquet).

    Bad UTF-8 and unreadable Parquet become rejected rows here; nothing raises.
    """
    kind = fmt if fmt != "auto" else ("parquet" if str(path).endswith(".parquet") else "jsonl")
    if kind == "parquet":
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:
            yield reject(new_row(path, 0, ""), "ingest", f"unreadable_parquet: {exc}")
            return
        for i, record in enumerate(table.to_pylist()):
            yield new_row(path, i, json.dumps(record, ensure_ascii=False, default=str))
        return
    for i, line in enumerate(bytes(data).split(b"\n")):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield reject(
                new_row(path, i, line.decode("utf-8", "replace")),
                "ingest",
                f"invalid_utf8: {exc.reason} at byte {exc.start}",
            )
            continue
        yield new_row(path, i, text)


def parse_record(row: dict[str, Any], max_prompt_chars: int) -> dict[str, Any]:
    """Validate and normalize one raw record in place; sets status/reason on failure."""
    if row["status"] != "ok":
        return row
    try:
        record = json.loads(row["raw"])
    except json.JSONDecodeError as exc:
        return reject(row, "ingest", f"bad_json: {exc.msg} (column {exc.colno})")
    if not isinstance(record, dict):
        return reject(row, "ingest", f"not_an_object: got {type(record).__name__}")
    messages, error = _messages(record)
    if error:
        return reject(row, "ingest", error)
    for key in ("domain", "reference", "id"):
        value = record.get(key)
        if (
            value is not None
            and not isinstance(value, (str, int, float))
            or isinstance(value, bool)
        ):
            return reject(
                row, "ingest", f"wrong_type: {key} must be a string, got {type(value).__name__}"
            )
    chars = sum(len(m["content"]) for m in messages)
    if chars > max_prompt_chars:
        return reject(
            row, "ingest", f"too_long: {chars} chars > ingest.max_prompt_chars={max_prompt_chars}"
        )
    row["messages"] = messages
    row["raw"] = row["raw"][:MAX_RAW_CHARS]  # parsed: keep only a preview for later rejects
    row["domain"] = str(record["domain"]) if record.get("domain") is not None else DEFAULT_DOMAIN
    row["reference"] = str(record["reference"]) if record.get("reference") is not None else None
    row["meta"] = {
        k: v
        for k, v in record.items()
        if k not in ("prompt", "messages", "domain", "reference", "id")
    }
    row["id"] = (
        str(record["id"])
        if record.get("id") not in (None, "")
        else "p-" + stable_hash(_normalized(messages))
    )
    return row


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


def ingest(
    files: Iterable[tuple[str, bytes]],
    fmt: str,
    max_prompt_chars: int,
    dedup: bool,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """(path, bytes) of each input file, in order -> validated rows, rejects included.

    Runs on the driver, before any model loads: parsing is cheap next to generation (COIG-P's
    92k prompts parse in seconds), and one pass in input order makes dedup deterministic:
    the first occurrence of a prompt wins, whatever the cluster's timing.
    """
    rows: list[dict[str, Any]] = []
    first: dict[str, str] = {}
    id_owner: dict[str, str] = {}
    for path, data in files:
        for row in read_records(data, path, fmt):
            if limit is not None and len(rows) >= limit:
                return rows
            row = parse_record(row, max_prompt_chars)
            here = f"{row['source']}#{row['index']}"
            if dedup and row["status"] == "ok":
                owner = first.setdefault(stable_hash(_normalized(row["messages"])), here)
                if owner != here:
                    reject(row, "ingest", f"duplicate: same prompt as {owner}")
            if row["status"] == "ok":
                owner = id_owner.setdefault(row["id"], here)
                if owner != here:  # one id, two different prompts: pairs would be ambiguous
                    reject(row, "ingest", f"duplicate_id: id {row['id']!r} already used by {owner}")
            rows.append(row)
    return rows
