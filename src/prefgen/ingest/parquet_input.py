"""Parquet input -> one record per row, a bad row costing only itself.

A Parquet file is read row group by row group and converted batch by batch; a batch that
fails to become Python is redone row by row and column by column, so a value that is not
UTF-8 (Parquet does not check), a timestamp past year 9999 or a struct with duplicate field
names rejects its own row and names its column, while the rest of the file is kept. A row
group that cannot be read at all rejects each of its rows (the footer says how many).

Meta columns (all but the prompt fields) are made JSON values here, deliberately:
timestamps, dates and times become ISO-8601 text, decimals and durations their exact text,
map entries `[key, value]` lists. Anything else (bytes, say) is left as it is, for
`json_safe.check_json_safe` to reject with its type; the prompt fields keep Arrow's values,
so a binary prompt is refused as bytes, not read as the text "b'...'".
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.ingest.json_safe import MAX_DEPTH, quote

_BATCH = 1024
_MAX_LOST_ROWS = 100_000  # rejects written for one unreadable row group: a footer can lie


def parquet_records(
    file: BinaryIO, prompt_fields: tuple[str, ...]
) -> Iterator[tuple[int, str, dict | None, str | None]]:
    """(row number, JSON preview, values, None) per row, or (row number, preview, None, reason)
    for a row that cannot be kept. `file` is a seekable binary file, read one row group at a
    time. An unreadable file rejects the rows its footer claims, or one row 0 when not even
    that can be read."""
    try:
        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
    except Exception as exc:
        reason = f"unreadable_parquet: {exc}"
        for i in range(_rows_claimed(file)):  # one reject per row when the footer says how many
            yield i, "", None, reason
        return
    seen: set[str] = set()
    dup = next((n for n in names if n in seen or seen.add(n)), None)
    index = 0
    for group in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(group)
        except Exception as exc:
            n = pf.metadata.row_group(group).num_rows
            reason = f"unreadable_parquet: row group {group} (rows {index}-{index + n - 1}): {exc}"
            for i in range(index, index + n) if n <= _MAX_LOST_ROWS else [index]:
                yield i, "", None, reason
            index += n
            continue
        for record, reason in _records(table):
            if dup is not None:  # which column a reader keeps would be arbitrary
                reason = f"duplicate_key: column {quote(dup)} appears more than once"
            if reason is None:
                values = {k: v if k in prompt_fields else _from_arrow(v) for k, v in record.items()}
                yield index, _preview(record), values, None
            else:
                yield index, _preview(record), None, reason
            index += 1


def _rows_claimed(file: BinaryIO) -> int:
    """How many rows an unopenable file's footer claims: 1 when it cannot say (or lies)."""
    try:  # a schema past Arrow's depth limit (100) still has a footer that counts its rows
        file.seek(0)
        n = pq.ParquetFile(file, schema_depth_limit=1000).metadata.num_rows
    except Exception:  # older pyarrow has no schema_depth_limit: count as unreadable
        return 1
    return n if 1 <= n <= _MAX_LOST_ROWS else 1


def _records(table: pa.Table) -> Iterator[tuple[dict, str | None]]:
    """(values, None) per row, or (what could be read, reason) for a row with a bad value."""
    for batch in table.to_batches(max_chunksize=_BATCH):
        try:
            records = batch.to_pylist()
        except Exception:  # some value cannot become Python: find it, row by row
            yield from (_record(batch, i) for i in range(batch.num_rows))
            continue
        yield from ((r, None) for r in records)


def _record(batch: pa.RecordBatch, i: int) -> tuple[dict, str | None]:
    """One row, column by column: the first bad value's reason, the rest kept for the preview."""
    record: dict[str, Any] = {}
    reason = None
    for name, column in zip(batch.schema.names, batch.columns):
        try:
            record[name] = column[i].as_py()
            continue
        except UnicodeDecodeError as exc:
            record[name] = _lossy_text(column, i)
            why = f"invalid_utf8: column {quote(name)}: {exc.reason} at byte {exc.start}"
        except RecursionError:
            record[name] = "<too deep>"
            why = f"too_deep: column {quote(name)} nests deeper than Python can read"
        except Exception as exc:
            record[name] = "<unreadable>"
            why = f"unreadable_value: column {quote(name)}: {type(exc).__name__}: {exc}"
        reason = reason or why
    return record, reason


def _lossy_text(column: pa.Array, i: int) -> str:
    """A string value that is not UTF-8, with U+FFFD for its bad bytes (for the preview only)."""
    binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(column.type)
    if binary is None:
        return "<not UTF-8>"
    return column.slice(i, 1).view(binary)[0].as_py().decode("utf-8", "replace")


def _from_arrow(value: Any, depth: int = 1) -> Any:
    """Arrow's Python values -> JSON values (see the module docstring). Depth-bounded: deeper
    values are rejected anyway."""
    if depth > MAX_DEPTH + 1:
        return value
    if isinstance(value, dict):
        return {k: _from_arrow(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # map entries come back as (key, value) tuples
        return [_from_arrow(v, depth + 1) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, dt.timedelta)):
        return str(value)
    return value


def _preview(record: dict) -> str:
    """A row as JSON text for the rejects table (bytes and other odd values as their repr)."""
    try:
        return json.dumps(record, ensure_ascii=False, default=repr)
    except (RecursionError, ValueError, TypeError):
        return f"<row with columns {list(record)}: too deep to show>"
