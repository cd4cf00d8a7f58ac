"""The run manifest: what was run, on what, what came out. Written last: it is the commit point.

A run directory without a `manifest.json` is not a dataset (a crashed or running job).
Readers list shards from the manifest, never by globbing the directory.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import prefgen
from prefgen.data import storage

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FULL_HASH_LIMIT = 64 * 1024 * 1024  # bigger inputs are fingerprinted by size + etag/mtime


def code_version() -> str:
    version = prefgen.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+g{sha}" if sha else version


def input_fingerprint(fs, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        info = fs.info(path)
        digest.update(f"{path}\0{info.get('size')}\0".encode())
        if (info.get("size") or 0) <= FULL_HASH_LIMIT:
            content = hashlib.sha256()
            with fs.open(path, "rb") as file:  # a piece at a time: the driver never holds it
                while piece := file.read(1 << 20):
                    content.update(piece)
            digest.update(content.digest())
        else:
            digest.update(
                str(info.get("ETag") or info.get("mtime") or info.get("LastModified")).encode()
            )
    return digest.hexdigest()[:16]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_rates(models: dict[str, dict]) -> dict[str, dict]:
    """Add tokens/s per model (tokens over the model's own share of engine time)."""
    out = {}
    for name, m in models.items():
        seconds = m.get("gen_seconds", 0.0)
        out[name] = {
            **m,
            "tokens_per_s": round(m.get("tokens", 0) / seconds, 2) if seconds else None,
        }
    return out


def write_manifest(fs, root: str, manifest: dict[str, Any]) -> None:
    storage.write_json_atomic(fs, storage.join(root, MANIFEST), manifest)


def read_manifest(url: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    fs, root = storage.filesystem(url, storage_options)
    path = storage.join(root, MANIFEST)
    return storage.read_json(fs, path) if fs.exists(path) else None


def shard_urls(url: str, manifest: dict[str, Any], table: str) -> list[str]:
    return [storage.join(url, s["path"]) for s in manifest["shards"][table]]


def read_rows(
    url: str, manifest: dict[str, Any], table: str, storage_options: dict | None = None
) -> list[dict]:
    """Every row of one output table, read from exactly the shards the manifest lists."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(url, storage_options)
    rows: list[dict] = []
    for shard in shard_urls(url, manifest, table):
        _, path = storage.filesystem(shard, storage_options)
        rows.extend(pq.read_table(path, filesystem=storage.arrow_filesystem(fs)).to_pylist())
    return rows
