"""Paths, files and safe commits on any fsspec URL (local disk, s3://, ...).

Why the care: an fsspec file closed after an exception still uploads what it has, so a
plain `with fs.open(url, "wb")` that fails midway publishes a truncated object. Every write
here goes to a local temporary file first and is published in one step: a rename on local
disk, a single `put` on object storage (a PUT or multipart upload is invisible until it
completes). The run's `manifest.json` is written last and is the commit point.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs


def resolve_options(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options with AWS_ENDPOINT_URL folded in for s3:// URLs.

    Resolved on the driver and shipped to workers with the stage, because a worker's
    environment is the one its node started with, not the driver's.
    """
    options = dict(storage_options or {})
    # an endpoint the config names (either way s3fs takes one) beats the environment's
    named = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    if url.startswith(("s3://", "s3a://")) and os.environ.get("AWS_ENDPOINT_URL") and not named:
        options["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    return options


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path without protocol) for a URL."""
    return url_to_fs(url, **resolve_options(url, storage_options))


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts]])


def is_local(fs) -> bool:
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def arrow_filesystem(fs):
    """A pyarrow filesystem for Ray Data readers, backed by the same fsspec instance."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs))


def list_files(
    url: str, storage_options: dict | None = None, suffixes: tuple[str, ...] = ()
) -> list[str]:
    """Files under a file URL, a directory URL or a glob, sorted; protocol-less paths for `fs`."""
    fs, path = filesystem(url, storage_options)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        found = [path]
    else:
        raise FileNotFoundError(f"input not found: {url}")
    files = sorted(p for p in found if not fs.isdir(p))
    if suffixes:
        files = [p for p in files if p.endswith(suffixes)]
    hidden = ("/.", "/_")
    return [p for p in files if not any(h in "/" + p.split("/")[-1] for h in hidden)]


def write_bytes_atomic(fs, path: str, data: bytes) -> None:
    """Publish `data` at `path` whole or not at all."""
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        fs.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    with tempfile.NamedTemporaryFile(prefix="prefgen-", suffix=".part") as tmp:
        tmp.write(data)
        tmp.flush()
        fs.put_file(tmp.name, path)


def write_parquet_atomic(fs, path: str, table: pa.Table) -> int:
    """Write a Parquet file in one step; returns its size in bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    write_bytes_atomic(fs, path, data)
    return len(data)


def write_json_atomic(fs, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(fs, path: str) -> Any:
    with fs.open(path, "rb") as f:
        return json.load(f)


def remove_tree(fs, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)


def put_tree(source: Path, fs, target: str) -> None:
    """Copy a local directory's files to `target` on `fs` (a local copy, or one upload a file)."""
    if is_local(fs):
        shutil.copytree(source, target, dirs_exist_ok=True)
        return
    for local in sorted(source.rglob("*")):
        if local.is_file():
            fs.put_file(str(local), join(target, str(local.relative_to(source))))
