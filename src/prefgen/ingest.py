"""Ingest: prompt files -> one validated row per prompt; bad records become rejects, never crashes.

Input records come from JSONL (one JSON object per line) or Parquet files at any fsspec URL.
A record holds a `prompt` string or chat `messages`, plus optional `id`, `domain`, `reference`
and any other fields (kept as `meta`). Each valid prompt gets a stable id: its own `id`, or a
hash of its normalized messages.

Exact duplicates (same normalized messages) are dropped through `DedupRegistry`, a small Ray
actor that remembers which record claimed each prompt first. The claim is keyed by the record's
position (file, index), so a retried batch re-claims its own prompts instead of rejecting them
as duplicates of itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.rows import MAX_RAW_CHARS, encode_batch, new_row, reject, stable_hash

ROLES = ("system", "user", "assistant")


def split_records(batch: dict[str, Any], fmt: str, rows_per_block: int) -> Iterator[pa.Table]:
    """Whole input files (bytes + path) -> one raw record per line/row, in blocks of `rows_per_block`.

    Small blocks are what lets the model stages overlap: a file read as one block would pass
    through every model pool one after another. Bad UTF-8 is kept here and rejected later.
    """
    rows = []
    for data, path in zip(batch["bytes"], batch["path"]):
        kind = fmt if fmt != "auto" else ("parquet" if str(path).endswith(".parquet") else "jsonl")
        if kind == "parquet":
            try:
                table = pq.read_table(io.BytesIO(data))
            except Exception as exc:
                row = new_row(str(path), 0, "")
                rows.append(reject(row, "ingest", f"unreadable_parquet: {exc}"))
                continue
            for i, record in enumerate(table.to_pylist()):
                rows.append(
                    new_row(str(path), i, json.dumps(record, ensure_ascii=False, default=str))
                )
        else:
            for i, line in enumerate(bytes(data).split(b"\n")):
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    rows.append(
                        reject(
                            new_row(str(path), i, line.decode("utf-8", "replace")),
                            "ingest",
                            f"invalid_utf8: {exc.reason} at byte {exc.start}",
                        )
                    )
                    continue
                rows.append(new_row(str(path), i, text))
    for start in range(0, len(rows), rows_per_block):
        yield encode_batch(rows[start : start + rows_per_block])


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
    row["domain"] = str(record["domain"]) if record.get("domain") is not None else "general"
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


class DedupRegistry:
    """Ray actor: first claimant of a prompt key wins; the same claimant may claim again (retries)."""

    def __init__(self):
        self.owner: dict[str, str] = {}

    def claim(self, keys: list[str], owners: list[str]) -> list[str | None]:
        """For each key, None if `owner` holds it, else the owner it duplicates."""
        result = []
        for key, owner in zip(keys, owners):
            first = self.owner.setdefault(key, owner)
            result.append(None if first == owner else first)
        return result


def validate_batch(batch: pa.Table, max_prompt_chars: int, dedup_actor: str | None) -> pa.Table:
    """Ray Data stage: parse + validate + dedup. Same rows out as in (rejects are marked, not dropped)."""
    from prefgen.rows import decode_batch

    rows = [parse_record(r, max_prompt_chars) for r in decode_batch(batch)]
    if dedup_actor:
        ok = [r for r in rows if r["status"] == "ok"]
        if ok:
            import ray

            registry = ray.get_actor(dedup_actor)
            keys = [stable_hash(_normalized(r["messages"])) for r in ok]
            owners = [f"{r['source']}#{r['index']}" for r in ok]
            firsts = ray.get(registry.claim.remote(keys, owners))
            for r, first in zip(ok, firsts):
                if first is not None:
                    reject(r, "ingest", f"duplicate: same prompt as {first}")
    return encode_batch(rows)
