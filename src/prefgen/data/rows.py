"""In-flight prompt rows as plain dicts of `prefgen.data.schema.ROW_SCHEMA`'s shape.

`to_rows` turns an Arrow batch into a list of rows (nested lists, structs and maps become
Python lists and dicts, missing lists empty), `to_table` turns them back, checked against the
schema: one conversion per stage batch, no JSON. Stages never drop or add rows (Ray replays a
retried task and expects the same number of outputs); a rejected prompt stays in the stream
with `status="rejected"` and is skipped by later stages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from prefgen.data.schema import ROW_SCHEMA

MAX_RAW_CHARS = 2000
_LISTS = ("messages", "responses", "judge_records", "agreement", "pairs", "dropped")
_RESPONSE_MAPS = ("scores", "rationales", "judge_status")
_AGREEMENT_MAPS = ("kendall_tau", "pair_order_agreement")


def to_rows(batch: pa.Table) -> list[dict[str, Any]]:
    # Arrow maps come back as (key, value) lists; turning the few known map fields into dicts
    # here is ~15x cheaper than pyarrow's generic maps_as_pydicts conversion.
    rows = batch.to_pylist()
    for row in rows:
        for column in _LISTS:
            if row.get(column) is None:
                row[column] = []
        for response in row["responses"]:
            for key in _RESPONSE_MAPS:
                response[key] = dict(response[key] or ())
        for pair in row["pairs"]:
            _pair_maps(pair)
        for dropped in row["dropped"]:
            if dropped.get("pair"):
                _pair_maps(dropped["pair"])
        for agreement in row["agreement"]:
            for key in _AGREEMENT_MAPS:
                agreement[key] = dict(agreement[key] or ())
        row["stage_seconds"] = dict(row.get("stage_seconds") or ())
    return rows


def _pair_maps(pair: dict[str, Any]) -> None:
    for key in ("chosen_scores", "rejected_scores"):
        pair[key] = dict(pair[key] or ())


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def new_row(source: str, index: int, raw: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in ROW_SCHEMA.names}
    row.update(source=source, index=index, status="ok", raw=raw, stage_seconds={})
    for column in _LISTS:
        row[column] = []
    return row


def prompt_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The prompt's metadata as output tables record it (`prompt_meta`, `pairs.meta.prompt_meta`):
    the record's own fields plus what ingest, generation and the judges recorded about it."""
    meta = json.loads(row["extra"]) if row.get("extra") else {}
    if row.get("source_name") is not None:
        meta["source_name"] = row["source_name"]
    if row.get("assigned_models"):
        meta["assigned_models"] = list(row["assigned_models"])
    if row.get("prompt_quality") is not None:
        meta["prompt_quality"] = row["prompt_quality"]
    if row.get("domain_tag"):
        meta["domain_tag"] = {k: v for k, v in row["domain_tag"].items() if v is not None}
    judges = {}
    for record in row.get("judge_records") or []:
        judges[record["name"]] = {k: v for k, v in record.items() if k != "name" and v is not None}
    if judges:
        meta["judges"] = judges
    agreement = {
        a["name"]: {k: v for k, v in a.items() if k != "name"} for a in row.get("agreement") or []
    }
    if agreement:
        meta["judge_agreement"] = agreement
    return meta


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
