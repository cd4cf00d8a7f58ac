"""The Ray Data sink: final prompt rows -> `pairs/`, `responses/`, `rejects/` Parquet shards.

One write task writes one shard of each table with the explicit schemas of `prefgen.schema`,
each published whole (`storage.write_parquet_atomic`), and returns its counts. The driver
gathers those counts in `on_write_complete`; the pipeline then writes `manifest.json`, the
commit point, listing exactly the shards written here.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
from ray.data import Datasink

from prefgen import storage
from prefgen.rows import MAX_RAW_CHARS, decode_batch
from prefgen.schema import PAIR_SCHEMA, REJECT_SCHEMA, RESPONSE_SCHEMA


def split_tables(rows: list[dict]) -> dict[str, list[dict]]:
    """Final rows -> the records of each output table (pure)."""
    out: dict[str, list[dict]] = {"pairs": [], "responses": [], "rejects": []}
    for row in rows:
        if row["status"] != "ok":
            out["rejects"].append(_reject(row, row["stage"], row["reason"]))
            continue
        for pair in row["pairs"]:
            out["pairs"].append(
                {**pair, "meta": json.dumps(pair["meta"], ensure_ascii=False, default=str)}
            )
        for dropped in row.get("dropped") or []:  # removed by a filter: the whole pair kept in raw
            record = _reject(row, "filter", dropped["reason"])
            record.update(
                id=dropped["pair_id"],
                raw=json.dumps(dropped.get("pair"), ensure_ascii=False, default=str),
            )
            out["rejects"].append(record)
        for r in row["responses"]:
            out["responses"].append(
                {
                    "prompt_id": row["id"],
                    "prompt": row["messages"],
                    "domain": row["domain"],
                    "reference": row["reference"],
                    "model": r["model"],
                    "sample": r["sample"],
                    "system_prompt": r.get("system_prompt"),
                    "text": r["text"],
                    "finish_reason": r["finish_reason"],
                    "n_tokens": r["n_tokens"],
                    "gen_seconds": r.get("gen_seconds"),
                    "scores": list(r["scores"].items()),
                    "rationales": list(r["rationales"].items()),
                    "judge_status": list(r["judge_status"].items()),
                    "overall": r["overall"],
                    "no_pair_reason": row["reason"],
                }
            )
        if not row["pairs"]:
            out["rejects"].append(_reject(row, "pair", f"no_pair: {row['reason']}"))
    return out


def _reject(row: dict, stage: str, reason: str) -> dict:
    return {
        "id": row["id"],
        "source": row["source"],
        "index": row["index"],
        "stage": stage,
        "reason": reason,
        "raw": (row["raw"] or "")[:MAX_RAW_CHARS],
    }


def shard_counts(rows: list[dict]) -> dict[str, Any]:
    """Counts one shard contributes to the manifest (pure)."""
    rejected = Counter()
    no_pair = Counter()
    filtered = Counter()
    models: dict[str, Counter] = {}
    prompts_ok = 0
    for row in rows:
        if row["status"] != "ok":
            rejected[row["reason"].split(":")[0]] += 1
            continue
        prompts_ok += 1
        if not row["pairs"]:
            no_pair[row["reason"]] += 1
        for dropped in row.get("dropped") or []:
            filtered[dropped["reason"].split(" ")[0]] += 1
        for r in row["responses"]:
            m = models.setdefault(r["model"], Counter())
            m["responses"] += 1
            m["tokens"] += r["n_tokens"]
            m["gen_seconds"] += r.get("gen_seconds") or 0.0
            m["errors"] += r["finish_reason"].startswith("error")
    return {
        "records_in": len(rows),
        "prompts_ok": prompts_ok,
        "responses": sum(m["responses"] for m in models.values()),
        "pairs": sum(len(r["pairs"]) for r in rows if r["status"] == "ok"),
        "rejected_by_reason": dict(rejected),
        "no_pair_by_reason": dict(no_pair),
        "filtered_by_reason": dict(filtered),
        "models": {k: dict(v) for k, v in models.items()},
    }


_SUMMED = ("records_in", "prompts_ok", "responses", "pairs")
_BY_REASON = ("rejected_by_reason", "no_pair_by_reason", "filtered_by_reason")


def merge_counts(parts: list[dict]) -> dict[str, Any]:
    total: dict[str, Any] = {key: 0 for key in _SUMMED}
    reasons = {key: Counter() for key in _BY_REASON}
    models: dict[str, Counter] = {}
    for p in parts:
        for key in _SUMMED:
            total[key] += p[key]
        for key in _BY_REASON:
            reasons[key].update(p.get(key, {}))
        for name, m in p["models"].items():
            models.setdefault(name, Counter()).update(m)
    total.update({key: dict(c) for key, c in reasons.items()})
    total["models"] = {k: dict(v) for k, v in models.items()}
    return total


class PrefgenSink(Datasink):
    """Writes the three tables per write task; collects shard lists and counts for the manifest."""

    def __init__(self, output_url: str, storage_options: dict | None = None):
        self.output_url = output_url
        self.storage_options = storage.resolve_options(output_url, storage_options)
        self.write_id = uuid.uuid4().hex[:8]
        self.result: dict[str, Any] | None = None

    def write(self, blocks, ctx) -> dict[str, Any]:
        rows = []
        for block in blocks:
            table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            rows.extend(decode_batch(table))
        fs, root = storage.filesystem(self.output_url, self.storage_options)
        tables = split_tables(rows)
        shards = {}
        schemas = {"pairs": PAIR_SCHEMA, "responses": RESPONSE_SCHEMA, "rejects": REJECT_SCHEMA}
        for name, records in tables.items():
            if not records:
                continue
            rel = f"{name}/part-{self.write_id}-{ctx.task_idx:05d}.parquet"
            storage.write_parquet_atomic(
                fs, storage.join(root, rel), pa.Table.from_pylist(records, schema=schemas[name])
            )
            shards[name] = {"path": rel, "rows": len(records)}
        return {"shards": shards, "counts": shard_counts(rows)}

    def on_write_complete(self, write_result) -> None:
        returns = [r for r in write_result.write_returns if r]
        shards: dict[str, list] = {"pairs": [], "responses": [], "rejects": []}
        for r in returns:
            for name, shard in r["shards"].items():
                shards[name].append(shard)
        for name in shards:
            shards[name].sort(key=lambda s: s["path"])
        self.result = {"shards": shards, "counts": merge_counts([r["counts"] for r in returns])}
