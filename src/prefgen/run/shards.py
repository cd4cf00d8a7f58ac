"""Exactly-once output: the input is cut into shards, and each shard is committed whole or not at all.

Ray Data has no resume of its own and retries at least once, so the guarantee is ours:

* **Deterministic shards.** Ingest streams the input in order and cuts it into runs of
  `execution.shard_rows` records (`InputShards`: record k is in shard k // shard_rows), written
  as they fill, so the driver holds one shard's rows, whatever the input's size. The plan
  (`_work/plan.json`) fixes the shard count and each shard's row count, and is written once,
  after the input shards and before any model loads.
* **Deterministic names, marker last.** A shard's outputs go to fixed paths
  (`pairs/shard-00012.parquet`, ...), each published whole (`storage.write_parquet_atomic`);
  then its marker `_work/<phase>/shard-00012.done` is written. A shard without a marker is
  not committed, whatever files exist: a rerun rewrites the same names, so a kill between
  two files can leave no duplicate and no stale file behind. S3 has no rename; the marker is
  the commit, and a single PUT of a finished buffer never publishes a truncated object.
* **Collector on the driver.** `ShardCollector` receives the pipeline's final rows, drops
  copies of rows it already holds (a retried task may replay them), and commits a shard the
  moment all of its rows have arrived. A kill loses only the shards in flight.

Layout of a run directory:

    manifest.json                  the run's commit point, written last (prefgen.data.manifest)
    pairs/ responses/ rejects/     shard-NNNNN.parquet per committed shard
    _work/plan.json                shard plan: config hash, input fingerprint, rows per shard
    _work/input/shard-NNNNN.parquet      validated prompt rows
    _work/<phase>/shard-NNNNN.parquet    rows after an intermediate phase (phased mode)
    _work/<phase>/shard-NNNNN.done       commit markers
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from prefgen.data import storage
from prefgen.data.rows import reject, to_rows, to_table
from prefgen.data.schema import ROW_SCHEMA

WORK = "_work"
PLAN = f"{WORK}/plan.json"
INPUT_PHASE = "input"
FINAL_PHASE = "final"

log = logging.getLogger("prefgen")


class ErrorCeiling(RuntimeError):
    """Too many rows failed; the run stopped cleanly and can be resumed."""


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def phase_file(root: str, phase: str, shard: int) -> str:
    return storage.join(root, WORK, phase, f"{shard_name(shard)}.parquet")


def table_file(table: str, shard: int) -> str:
    """Path of a final table's shard, relative to the run root."""
    return f"{table}/{shard_name(shard)}.parquet"


def marker_file(root: str, phase: str, shard: int) -> str:
    return storage.join(root, WORK, phase, f"{shard_name(shard)}.done")


def committed(fs, root: str, phase: str) -> dict[int, dict[str, Any]]:
    """Shard -> marker content, for every committed shard of a phase."""
    found = fs.glob(storage.join(root, WORK, phase, "shard-*.done"))
    out = {}
    for path in found:
        shard = int(path.rsplit("/", 1)[-1][len("shard-") : -len(".done")])
        out[shard] = storage.read_json(fs, path)
    return out


def progress(fs, root: str) -> dict[str, Any] | None:
    """A run's progress from its plan and markers: shards committed per phase (None: no plan)."""
    plan_path = storage.join(root, PLAN)
    if not fs.exists(plan_path):
        return None
    plan = storage.read_json(fs, plan_path)
    phases = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(storage.join(root, WORK), detail=False)
        if fs.isdir(p) and not p.rstrip("/").endswith("/" + INPUT_PHASE)
    )
    return {
        "records": plan["records"],
        "shards": len(plan["rows"]),
        "phases": {phase: len(committed(fs, root, phase)) for phase in phases},
        "config_hash": plan["config_hash"],
    }


def write_marker(fs, root: str, phase: str, shard: int, content: dict[str, Any]) -> None:
    storage.write_json_atomic(fs, marker_file(root, phase, shard), content)


def commit_phase_shard(fs, root: str, phase: str, shard: int, table: pa.Table) -> dict:
    """An intermediate phase's rows of one shard: data file, then marker."""
    storage.write_parquet_atomic(fs, phase_file(root, phase, shard), table)
    content = {"rows": table.num_rows}
    write_marker(fs, root, phase, shard, content)
    return content


class InputShards:
    """The input phase's shard files, written while ingest streams.

    Records are numbered in input order (`add` returns the number); shard k holds records
    [k * shard_rows, (k + 1) * shard_rows) and is written the moment it is full. Decisions that
    need every record first (quotas, near-duplicates) are applied afterwards by `reject`,
    which rewrites only the shards they touch.
    """

    def __init__(self, fs, root: str, shard_rows: int):
        self.fs, self.root, self.shard_rows = fs, root, shard_rows
        self.rows: dict[int, int] = {}  # shard -> records, for the plan
        self.count = 0
        self._pending: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> int:
        number = self.count
        row["shard"] = number // self.shard_rows
        self._pending.append(row)
        self.count += 1
        if len(self._pending) == self.shard_rows:
            self._write(row["shard"], self._pending)
            self._pending = []
        return number

    def close(self) -> None:
        if self._pending:
            self._write(self._pending[0]["shard"], self._pending)
            self._pending = []

    def read(self, shard: int) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        path = phase_file(self.root, INPUT_PHASE, shard)
        fs = storage.arrow_filesystem(self.fs)
        return to_rows(pq.read_table(path, filesystem=fs, schema=ROW_SCHEMA))

    def reject(self, groups: Sequence[tuple[Sequence[int], str]]) -> None:
        """Reject records by number (stage `ingest`), rewriting each shard that holds one.

        `groups`: (record numbers, the reason they share); a quota's many rejects are one
        array and one string, not a dict entry each."""
        numbers = np.concatenate([np.asarray(n, dtype=np.int64) for n, _ in groups] or [[]])
        if not len(numbers):
            return
        which = np.repeat(np.arange(len(groups)), [len(n) for n, _ in groups])
        order = np.argsort(numbers, kind="stable")
        numbers, which = numbers[order], which[order]
        touched, starts = np.unique(numbers // self.shard_rows, return_index=True)
        for shard, lo, hi in zip(touched.tolist(), starts, [*starts[1:], len(numbers)]):
            rows = self.read(shard)
            for number, group in zip(numbers[lo:hi].tolist(), which[lo:hi].tolist()):
                reject(rows[number % self.shard_rows], "ingest", groups[group][1])
            self._write(shard, rows)

    def _write(self, shard: int, rows: list[dict[str, Any]]) -> None:
        storage.write_parquet_atomic(
            self.fs, phase_file(self.root, INPUT_PHASE, shard), to_table(rows)
        )
        self.rows[shard] = len(rows)


@dataclass
class ShardCollector:
    """Driver side of a phase: gathers rows per shard, commits each shard once it is complete.

    `expected` is the plan's row count per pending shard; `commit(shard, rows)` writes the
    shard and its marker (it runs on a small thread pool so writing overlaps the pipeline).
    Rows are Arrow tables with `shard`, `source`, `index` and `status`/`reason` columns.
    """

    expected: dict[int, int]
    commit: Callable[[int, pa.Table], dict]
    phase: str
    max_error_rate: float = 1.0
    min_rows_for_error_rate: int = 0
    buffers: dict[int, dict[str, pa.Table]] = field(default_factory=dict)
    done: dict[int, dict] = field(default_factory=dict)
    replayed: int = 0
    rows_seen: int = 0
    errors_seen: int = 0
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))
    _futures: dict[int, Future] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)

    def add(self, batch: pa.Table) -> None:
        """Take a batch of final rows; commit the shards it completes (after the error check,
        so a shard that pushed the run over its error ceiling is redone on resume)."""
        shards = batch.column("shard").to_pylist()
        sources = batch.column("source").to_pylist()
        indices = batch.column("index").to_pylist()
        reasons = batch.column("reason").to_pylist()
        complete = []
        for pos, shard in enumerate(shards):
            key = f"{sources[pos]}#{indices[pos]}"
            buffer = self.buffers.get(shard)
            if shard not in self.expected or shard in self._futures or key in (buffer or {}):
                self.replayed += 1  # a retried task replayed a row we already hold
                continue
            buffer = self.buffers.setdefault(shard, {})
            buffer[key] = batch.slice(pos, 1)
            self.rows_seen += 1
            self.errors_seen += bool(reasons[pos] and reasons[pos].startswith("error"))
            if len(buffer) == self.expected[shard]:
                complete.append(shard)
        self._check_errors()
        for shard in complete:
            self._commit(shard)

    def _commit(self, shard: int) -> None:
        rows = self.buffers.pop(shard)
        table = pa.concat_tables(rows[k] for k in sorted(rows))
        self._futures[shard] = self._pool.submit(self._commit_one, shard, table)

    def _commit_one(self, shard: int, table: pa.Table) -> dict:
        content = self.commit(shard, table)
        self.done[shard] = content
        elapsed = time.perf_counter() - self._started
        print(
            f"prefgen [{self.phase}] {len(self.done)}/{len(self.expected)} shards committed "
            f"({shard_name(shard)}, {table.num_rows} rows, {elapsed:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        return content

    def _check_errors(self) -> None:
        if self.rows_seen < max(1, self.min_rows_for_error_rate):
            return
        rate = self.errors_seen / self.rows_seen
        if rate > self.max_error_rate:
            self.finish()
            raise ErrorCeiling(
                f"phase {self.phase}: {self.errors_seen} of {self.rows_seen} rows failed "
                f"({rate:.0%} > execution.max_error_rate={self.max_error_rate:.0%}); "
                f"stopped after committing {len(self.done)} shard(s). Fix the cause and run "
                "the same command again to resume."
            )

    def finish(self) -> dict[int, dict]:
        """Wait for every commit in flight; re-raise the first commit error."""
        for future in self._futures.values():
            future.result()
        self._pool.shutdown()
        return self.done

    def incomplete(self) -> dict[int, int]:
        """Shards that never got all their rows: shard -> rows received (should be empty)."""
        return {s: len(self.buffers.get(s, {})) for s in self.expected if s not in self._futures}
