"""Decode and encode in-flight prompt rows (see `prefgen.data.schema.ROW_SCHEMA`).

Every stage works on plain dicts: `decode_batch` turns an Arrow batch into a list of rows with
`messages`, `meta`, `responses` and `pairs` parsed, and `encode_batch` turns them back. Stages
never drop or add rows (Ray replays a retried task and expects the same number of outputs);
a rejected prompt stays in the stream with `status="rejected"` and is skipped by later stages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from prefgen.data.schema import ROW_SCHEMA

_JSON_COLUMNS = {"messages": list, "meta": dict, "responses": list, "pairs": list, "dropped": list}
MAX_RAW_CHARS = 2000


def decode_batch(batch: pa.Table) -> list[dict[str, Any]]:
    rows = batch.to_pylist()
    for row in rows:
        for column, empty in _JSON_COLUMNS.items():
            value = row.get(column)
            row[column] = json.loads(value) if value else empty()
    return rows


def encode_batch(rows: list[dict[str, Any]]) -> pa.Table:
    encoded = []
    for row in rows:
        out = {name: row.get(name) for name in ROW_SCHEMA.names}
        for column in _JSON_COLUMNS:
            out[column] = json.dumps(row.get(column) or _JSON_COLUMNS[column](), ensure_ascii=False)
        encoded.append(out)
    return pa.Table.from_pylist(encoded, schema=ROW_SCHEMA)


def new_row(source: str, index: int, raw: str) -> dict[str, Any]:
    return {
        "id": None,
        "source": source,
        "index": index,
        "shard": None,
        "status": "ok",
        "stage": None,
        "reason": None,
        "raw": raw,  # whole until parsed; only the rejects table truncates it
        "messages": [],
        "domain": None,
        "reference": None,
        "meta": {},
        "responses": [],
        "pairs": [],
        "dropped": [],
    }


def reject(row: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
    row["status"] = "rejected"
    row["stage"] = stage
    row["reason"] = reason
    return row


def row_key(row: dict[str, Any]) -> str:
    """Unique per input record (ids are not: rejected records have none, duplicates share one)."""
    return f"{row['source']}#{row['index']}"


def is_ok(row: dict[str, Any]) -> bool:
    return row["status"] == "ok"


def stable_hash(*parts: Any, length: int = 16) -> str:
    """sha256 over the JSON of `parts`: the same on every machine and every run (unlike hash())."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    return int(stable_hash(*parts, length=15), 16)
