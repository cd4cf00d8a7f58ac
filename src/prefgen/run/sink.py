"""Final prompt rows -> `pairs/`, `responses/`, `rejects/`: one Parquet file per table and shard.

Each shard's tables use the explicit schemas of `prefgen.data.schema`, are published whole
(`storage.write_parquet_atomic`) and are committed by their marker (`prefgen.run.shards`). The
pipeline then writes `manifest.json`, the run's commit point, listing exactly the committed
shards and their merged counts.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa

from prefgen.data import storage
from prefgen.data.rows import MAX_RAW_CHARS, prompt_meta, to_rows
from prefgen.data.schema import TABLES, pairs_table
from prefgen.pairing.strategies import output_pair
from prefgen.run import shards


def split_tables(rows: list[dict]) -> dict[str, list[dict]]:
    """Final rows -> the records of each output table (pure). The one place where a row's
    `extra` is parsed again and pair / prompt meta become JSON."""
    out: dict[str, list[dict]] = {"pairs": [], "responses": [], "rejects": []}
    for row in rows:
        if row["status"] != "ok":
            out["rejects"].append(_reject(row, row["stage"], row["reason"]))
            continue
        meta = prompt_meta(row)
        for pair in row["pairs"]:
            record = output_pair(pair, row["messages"], meta)
            out["pairs"].append({**record, "meta": _json(record["meta"])})
        for dropped in row.get("dropped") or []:  # removed by a filter: the whole pair kept in raw
            record = _reject(row, "filter", dropped["reason"])
            pair = (
                output_pair(dropped["pair"], row["messages"], meta) if dropped.get("pair") else None
            )
            record.update(id=dropped["pair_id"], raw=_json(pair))
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
                    "principle": r.get("principle"),
                    "verbalized_probability": r.get("verbalized_probability"),
                    "text": r["text"],
                    "finish_reason": r["finish_reason"],
                    "n_tokens": r["n_tokens"],
                    "gen_seconds": r.get("gen_seconds"),
                    "scores": list(r["scores"].items()),
                    "rationales": list(r["rationales"].items()),
                    "judge_status": list(r["judge_status"].items()),
                    "overall": r["overall"],
                    "no_pair_reason": row["reason"],
                    "prompt_meta": _json(meta),
                }
            )
        if not row["pairs"]:
            out["rejects"].append(_reject(row, "pair", f"no_pair: {row['reason']}"))
    return out


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


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
    routed = Counter()
    agreement = Counter()
    models: dict[str, Counter] = {}
    stages: Counter = Counter()
    prompts_ok = 0
    for row in rows:
        stages.update(row.get("stage_seconds") or {})
        if row["status"] != "ok":
            rejected[row["reason"].split(":")[0]] += 1
            continue
        prompts_ok += 1
        if not row["pairs"]:
            no_pair[row["reason"]] += 1
        for dropped in row.get("dropped") or []:
            filtered[dropped["reason"].split(" ")[0]] += 1
        if row.get("route"):
            routed[row["route"]] += 1
            if row["route"] == "judges":  # both scored: does the reward model agree?
                margins = [p["rm_margin"] for p in row["pairs"] if p["rm_margin"] is not None]
                agreement["both_scored"] += len(margins)
                agreement["agree"] += sum(m > 0 for m in margins)
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
        "routed": dict(routed),
        "rm_judge_agreement": dict(agreement),
        "models": {k: dict(v) for k, v in models.items()},
        "stage_seconds": dict(stages),
    }


_SUMMED = ("records_in", "prompts_ok", "responses", "pairs")
_BY_REASON = (
    "rejected_by_reason",
    "no_pair_by_reason",
    "filtered_by_reason",
    "routed",
    "rm_judge_agreement",
)


def merge_counts(parts: list[dict]) -> dict[str, Any]:
    total: dict[str, Any] = {key: 0 for key in _SUMMED}
    reasons = {key: Counter() for key in _BY_REASON}
    models: dict[str, Counter] = {}
    stages: Counter = Counter()
    for p in parts:
        stages.update(p.get("stage_seconds", {}))
        for key in _SUMMED:
            total[key] += p[key]
        for key in _BY_REASON:
            reasons[key].update(p.get(key, {}))
        for name, m in p["models"].items():
            models.setdefault(name, Counter()).update(m)
    total.update({key: dict(c) for key, c in reasons.items()})
    total["models"] = {k: dict(v) for k, v in models.items()}
    total["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
    return total


def commit_final_shard(fs, root: str, shard: int, table: pa.Table) -> dict[str, Any]:
    """Write one shard's three tables (always all three, empty or not), then its marker.

    Writing empty tables too means a redo after a kill overwrites every file an earlier
    attempt may have left, so no stale shard file can outlive its commit.
    """
    rows = to_rows(table)
    tables = split_tables(rows)
    files = {}
    for name, records in tables.items():
        rel = shards.table_file(name, shard)
        table = (
            pairs_table(records)
            if name == "pairs"
            else pa.Table.from_pylist(records, schema=TABLES[name])
        )
        storage.write_parquet_atomic(fs, storage.join(root, rel), table)
        files[name] = {"path": rel, "rows": len(records)}
    content = {"tables": files, "counts": shard_counts(rows)}
    shards.write_marker(fs, root, shards.FINAL_PHASE, shard, content)
    return content


def gather(markers: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Committed shards' markers -> the manifest's shard lists and merged counts."""
    listed: dict[str, list] = {name: [] for name in TABLES}
    for shard in sorted(markers):
        for name, file in markers[shard]["tables"].items():
            listed[name].append(file)
    return {"shards": listed, "counts": merge_counts([m["counts"] for m in markers.values()])}
