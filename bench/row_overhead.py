"""Per-row cost of moving a prompt row through one stage: JSON-string rows vs typed Arrow rows.

Before the typed rows, a row in flight was a table of JSON strings, and every stage decoded
the JSON into dicts and encoded it back (`json.loads` / `json.dumps` per nested column per
row). Now the row's nested parts are Arrow lists, structs and maps, and a stage converts a batch
once each way (`prefgen.data.rows.to_rows` / `to_table`). This bench builds the same realistic
rows (the quickstart's prompts, 3 responses each with scores, rationales, a judge record and a
pair) and times one stage hop both ways, side by side, in one process:

    .venv/bin/python bench/row_overhead.py [--rows 2048] [--batch 64] [--repeat 5]

It prints microseconds per row per stage hop for each format and their ratio. No model runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyarrow as pa

from prefgen.data.rows import new_row, to_rows, to_table

ROOT = Path(__file__).resolve().parents[1]
_JSON_COLUMNS = ("messages", "responses", "pairs", "dropped", "judge_records", "agreement")


def realistic_rows(n: int) -> list[dict]:
    prompts = [
        (json.loads(line).get("prompt") or json.loads(line)["messages"][-1]["content"])
        for line in (ROOT / "pipelines" / "data" / "quickstart_prompts.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    rows = []
    for i in range(n):
        row = new_row("prompts.jsonl", i, "{}")
        row.update(
            id=f"p-{i:06d}",
            messages=[{"role": "user", "content": prompts[i % len(prompts)]}],
            domain="math",
            reference="12",
            extra=json.dumps({"source": "bench"}),
        )
        for k, model in enumerate(("helpful", "stepwise", "terse")):
            row["responses"].append(
                {
                    "model": model,
                    "sample": 0,
                    "text": f"Answer {k}: " + "some words of a reply " * 12,
                    "finish_reason": "stop",
                    "n_tokens": 60,
                    "prompt_tokens": 40,
                    "system_prompt": "You are a helpful assistant.",
                    "principle": None,
                    "verbalized_probability": None,
                    "gen_seconds": 0.5,
                    "scores": {"coig_p": 5.5 + k, "math": float(k % 2)},
                    "rationales": {"math": "final answer 12 matches the reference"},
                    "judge_status": {"coig_p": "ok", "math": "ok"},
                    "overall": 5.0 + k,
                }
            )
        row["judge_records"].append(
            {"name": "lw", "kind": "listwise", "comparisons": None, "consistent_share": None,
             "permutation": [2, 0, 1]}
        )  # fmt: skip
        row["stage_seconds"] = {"generate": 1.2, "judge": 0.8}
        rows.append(row)
    return rows


# -- the JSON-string format the pipeline used before (reproduced here as the baseline) ---------


def json_table(rows: list[dict]) -> pa.Table:
    out = []
    for row in rows:
        rec = {k: v for k, v in row.items() if k not in _JSON_COLUMNS and k != "stage_seconds"}
        for column in _JSON_COLUMNS:
            rec[column] = json.dumps(row.get(column) or [], ensure_ascii=False)
        rec["stage_seconds"] = json.dumps(row.get("stage_seconds") or {})
        rec.pop("domain_tag", None)
        out.append(rec)
    return pa.Table.from_pylist(out)


def json_rows(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for row in rows:
        for column in (*_JSON_COLUMNS, "stage_seconds"):
            row[column] = json.loads(row[column]) if row[column] else []
    return rows


def hop_us_per_row(decode, encode, table: pa.Table, batch: int, repeat: int) -> float:
    """Microseconds per row for decode + encode of every batch of `table`, best of `repeat`."""
    batches = [table.slice(s, batch) for s in range(0, table.num_rows, batch)]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for b in batches:
            encode(decode(b))
        times.append(time.perf_counter() - start)
    return min(times) / table.num_rows * 1e6, statistics.median(times) / table.num_rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = realistic_rows(args.rows)
    typed = to_table(rows)
    strings = json_table(rows)
    assert json_rows(strings)[0]["responses"] == to_rows(typed)[0]["responses"]  # same content
    t_best, t_med = hop_us_per_row(to_rows, to_table, typed, args.batch, args.repeat)
    j_best, j_med = hop_us_per_row(json_rows, json_table, strings, args.batch, args.repeat)
    print(f"rows {args.rows}, batch {args.batch}, best of {args.repeat} (median in brackets)")
    print(f"  JSON-string rows (before)   {j_best:8.1f} us/row/stage  ({j_med:.1f})")
    print(f"  typed Arrow rows (now)      {t_best:8.1f} us/row/stage  ({t_med:.1f})")
    print(f"  ratio before / now          {j_best / t_best:8.2f}x")


if __name__ == "__main__":
    main()
