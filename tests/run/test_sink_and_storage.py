"""Output tables, counts and safe publishing (no Ray needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefgen.data import storage
from prefgen.data.schema import PAIR_SCHEMA, REJECT_SCHEMA, RESPONSE_SCHEMA
from prefgen.run.sink import merge_counts, shard_counts, split_tables


def _response(model: str, overall: float | None, tokens: int = 5) -> dict:
    return {
        "model": model,
        "sample": 0,
        "text": f"answer by {model}",
        "finish_reason": "stop",
        "n_tokens": tokens,
        "system_prompt": None,
        "gen_seconds": 0.5,
        "scores": {"coig_p": overall},
        "rationales": {},
        "judge_status": {"coig_p": "ok"},
        "overall": overall,
    }


def _row(
    pid: str, status: str = "ok", pairs: list | None = None, reason: str | None = None
) -> dict:
    return {
        "id": pid,
        "source": "f.jsonl",
        "index": 3,
        "status": status,
        "stage": "ingest" if status != "ok" else None,
        "reason": reason,
        "raw": '{"prompt": "x"}',
        "messages": [{"role": "user", "content": "x"}],
        "domain": "chat",
        "reference": None,
        "meta": {},
        "responses": [_response("a", 7.0), _response("b", 2.0)] if status == "ok" else [],
        "pairs": pairs or [],
    }


def _pair(pid: str) -> dict:
    msg = [{"role": "assistant", "content": "c"}]
    return {
        "id": f"{pid}-1",
        "prompt_id": pid,
        "prompt": [{"role": "user", "content": "x"}],
        "chosen": msg,
        "rejected": [{"role": "assistant", "content": "r"}],
        "chosen_score": 7.0,
        "rejected_score": 2.0,
        "margin": 5.0,
        "chosen_model": "a",
        "rejected_model": "b",
        "domain": "chat",
        "judge": "coig_p",
        "strategy": "best_vs_worst",
        "meta": {"chosen_sample": 0},
    }


def test_split_tables_accounts_for_every_row_and_matches_the_schemas():
    rows = [
        _row("p1", pairs=[_pair("p1")]),
        _row("p2", reason="margin_below_threshold"),
        _row(None, "rejected", reason="bad_json: x"),
    ]
    tables = split_tables(rows)
    assert [p["prompt_id"] for p in tables["pairs"]] == ["p1"]
    assert {r["reason"] for r in tables["rejects"]} == {
        "no_pair: margin_below_threshold",
        "bad_json: x",
    }
    assert {r["stage"] for r in tables["rejects"]} == {"pair", "ingest"}
    assert len(tables["responses"]) == 4
    # every record converts under the explicit output schemas
    pa.Table.from_pylist(tables["pairs"], schema=PAIR_SCHEMA)
    pa.Table.from_pylist(tables["responses"], schema=RESPONSE_SCHEMA)
    pa.Table.from_pylist(tables["rejects"], schema=REJECT_SCHEMA)


def test_counts_merge_across_shards():
    a = shard_counts(
        [_row("p1", pairs=[_pair("p1")]), _row(None, "rejected", reason="bad_json: x")]
    )
    b = shard_counts([_row("p2", reason="all_tied"), _row(None, "rejected", reason="bad_json: y")])
    total = merge_counts([a, b])
    assert total["records_in"] == 4 and total["prompts_ok"] == 2 and total["pairs"] == 1
    assert total["rejected_by_reason"] == {"bad_json": 2}
    assert total["no_pair_by_reason"] == {"all_tied": 1}
    assert total["models"]["a"]["responses"] == 2 and total["models"]["a"]["tokens"] == 10


def test_local_publish_is_all_or_nothing(tmp_path):
    fs, root = storage.filesystem(str(tmp_path))
    target = storage.join(root, "pairs/part-0.parquet")

    class Boom(Exception):
        pass

    # a failure while writing leaves neither the target nor a temp file behind
    original = storage.os.fsync

    def failing_fsync(fd):
        raise Boom()

    storage.os.fsync = failing_fsync
    try:
        with pytest.raises(Boom):
            storage.write_bytes_atomic(fs, target, b"partial")
    finally:
        storage.os.fsync = original
    assert not (tmp_path / "pairs" / "part-0.parquet").exists()
    assert list((tmp_path / "pairs").iterdir()) == []

    size = storage.write_parquet_atomic(fs, target, pa.Table.from_pylist([], schema=PAIR_SCHEMA))
    assert size > 0 and (tmp_path / "pairs" / "part-0.parquet").exists()


def test_list_files_skips_hidden_and_temp_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / ".tmp-x.jsonl").write_text("{}\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "b.parquet").write_bytes(b"")
    found = storage.list_files(str(tmp_path), suffixes=(".jsonl", ".parquet"))
    assert [f.rsplit("/", 1)[-1] for f in found] == ["a.jsonl", "b.parquet"]
    with pytest.raises(FileNotFoundError):
        storage.list_files(str(tmp_path / "missing.jsonl"))


def test_filtered_pairs_land_in_rejects_with_the_pair_itself():
    import json

    row = _row("p1", pairs=[_pair("p1")])
    row["dropped"] = [
        {
            "pair_id": "p1-2",
            "reason": "rm_inverted (rm margin -0.5 <= 0)",
            "pair": {"id": "p1-2", "rm_margin": -0.5},
        }
    ]
    tables = split_tables([row])
    (rejected,) = [r for r in tables["rejects"] if r["stage"] == "filter"]
    assert rejected["id"] == "p1-2" and rejected["reason"].startswith("rm_inverted")
    assert json.loads(rejected["raw"])["rm_margin"] == -0.5
    assert shard_counts([row])["filtered_by_reason"] == {"rm_inverted": 1}


def test_the_collector_commits_each_shard_once_with_replayed_rows_dropped():
    """A retried task replays rows; a batch may span shards: each shard is committed once,
    when its last row arrives, with every row once, in key order."""
    from prefgen.run.shards import ShardCollector

    def rows(shard: int, indices: list[int]) -> pa.Table:
        return pa.table(
            {
                "shard": [shard] * len(indices),
                "source": ["f.jsonl"] * len(indices),
                "index": indices,
                "reason": [None] * len(indices),
            }
        )

    committed: dict[int, list[int]] = {}

    def commit(shard: int, table: pa.Table) -> dict:
        committed[shard] = table.column("index").to_pylist()
        return {"rows": table.num_rows}

    collector = ShardCollector({0: 3, 1: 2}, commit, "final")
    collector.add(rows(0, [2, 0]))
    collector.add(rows(0, [2, 0]))  # replayed by a retried task
    assert collector.replayed == 2 and not collector.done
    collector.add(pa.concat_tables([rows(0, [1]), rows(1, [5, 4])]))
    assert collector.finish() == {0: {"rows": 3}, 1: {"rows": 2}}
    assert committed == {0: [0, 1, 2], 1: [4, 5]}
    assert collector.incomplete() == {}


def test_input_shards_are_contiguous_runs_written_as_they_fill(tmp_path):
    """Ingest's writer: record k lands in shard k // shard_rows, a shard is on disk as soon as
    it is full (the driver never holds more than one), and late rejects rewrite only the
    shards that hold them."""
    from prefgen.data.rows import new_row
    from prefgen.run.shards import INPUT_PHASE, InputShards, phase_file

    fs, root = storage.filesystem(str(tmp_path))
    written = InputShards(fs, root, shard_rows=3)
    for i in range(7):
        row = new_row("in.jsonl", i, "{}")
        row.update(id=f"p{i}", messages=[{"role": "user", "content": f"q{i}"}])
        assert written.add(row) == i
        full = (i + 1) // 3
        assert sorted(written.rows) == list(range(full))  # only full shards so far
    written.close()
    assert written.rows == {0: 3, 1: 3, 2: 1} and written.count == 7
    assert [r["index"] for r in written.read(1)] == [3, 4, 5]
    untouched = (tmp_path / phase_file("", INPUT_PHASE, 0).lstrip("/")).stat().st_mtime_ns
    written.reject([([6], "near_duplicate: test"), (np.array([4]), "over_quota: test")])
    assert [(r["status"], r["reason"]) for r in written.read(1)] == [
        ("ok", None),
        ("rejected", "over_quota: test"),
        ("ok", None),
    ]
    assert written.read(2)[0]["stage"] == "ingest"
    assert (tmp_path / phase_file("", INPUT_PHASE, 0).lstrip("/")).stat().st_mtime_ns == untouched
