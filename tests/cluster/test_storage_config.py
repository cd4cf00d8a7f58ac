"""Object storage reached through `storage_options` alone, as a config file would set it.

moto's standalone server plays S3. The AWS environment is emptied first (no AWS_ENDPOINT_URL,
no keys, no config files), so if these pass, the endpoint and credentials came from the
options: the same dict a pipeline config carries under `input.storage_options` /
`output.storage_options` (docs/storage.md).
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from conftest import free_port

from prefgen.data import storage
from prefgen.data.manifest import read_manifest

AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


@pytest.fixture
def bare_env(monkeypatch, tmp_path, s3_server):
    """No AWS settings from the environment or ~/.aws: only storage_options can reach moto."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never wait on an instance role
    return s3_server


def _bucket(options: dict) -> str:
    """A fresh bucket per test, made through the same options under test."""
    name = f"pg-{uuid.uuid4().hex[:12]}"
    fs, _ = storage.filesystem(f"s3://{name}", options)
    fs.mkdir(name)
    return name


def _options_styles(endpoint: str) -> dict[str, dict]:
    return {
        # s3fs's own keyword arguments (what the MinIO / R2 examples in docs/storage.md use)
        "endpoint_url": {"endpoint_url": endpoint, "key": "minio", "secret": "minio123"},
        # botocore's client arguments, passed through by s3fs
        "client_kwargs": {
            "key": "minio",
            "secret": "minio123",
            "client_kwargs": {"endpoint_url": endpoint},
        },
    }


@pytest.mark.parametrize("style", ["endpoint_url", "client_kwargs"])
def test_write_list_read_through_storage_options_only(bare_env, style):
    options = _options_styles(bare_env)[style]
    bucket = _bucket(options)
    root = f"s3://{bucket}/run"
    fs, path = storage.filesystem(root, options)
    assert path == f"{bucket}/run"

    table = pa.table({"id": ["a", "b", "c"], "score": [1.0, 2.5, 9.0]})
    size = storage.write_parquet_atomic(fs, storage.join(path, "pairs", "part-0.parquet"), table)
    assert size > 0
    storage.write_bytes_atomic(fs, storage.join(path, "pairs", ".tmp-ignored"), b"x")
    storage.write_json_atomic(fs, storage.join(path, "manifest.json"), {"counts": {"pairs": 3}})

    # list_files: sorted, hidden and temp files skipped, by dir, by glob, by file
    assert storage.list_files(storage.join(root, "pairs"), options) == [
        f"{bucket}/run/pairs/part-0.parquet"
    ]
    assert storage.list_files(f"{root}/*.json", options) == [f"{bucket}/run/manifest.json"]
    assert storage.list_files(root, options, suffixes=(".parquet",)) == [
        f"{bucket}/run/pairs/part-0.parquet"
    ]
    with pytest.raises(FileNotFoundError, match="input not found"):
        storage.list_files(storage.join(root, "missing.jsonl"), options)

    # what was written reads back whole, through the helpers the pipeline uses
    assert storage.read_json(fs, storage.join(path, "manifest.json")) == {"counts": {"pairs": 3}}
    assert read_manifest(root, options) == {"counts": {"pairs": 3}}
    import pyarrow.parquet as pq

    back = pq.read_table(
        f"{bucket}/run/pairs/part-0.parquet", filesystem=storage.arrow_filesystem(fs)
    )
    assert back.equals(table)

    storage.remove_tree(fs, path)
    assert not fs.exists(path)


def test_the_endpoint_in_the_options_is_the_one_used(bare_env):
    """Point the options at a closed port: the call fails there, so the options are obeyed
    (not some default endpoint or a leftover environment variable)."""
    closed = f"http://127.0.0.1:{free_port()}"
    options = {
        "endpoint_url": closed,
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(Exception, match=f"Could not connect to the endpoint URL: .{closed}/"):
        storage.list_files("s3://any-bucket/prompts.jsonl", options)


def test_config_endpoint_beats_the_environment(bare_env, monkeypatch):
    """An endpoint in the config wins over AWS_ENDPOINT_URL in whichever form it is written;
    the environment only fills in when the config names none."""
    options = _options_styles(bare_env)["client_kwargs"]
    bucket = _bucket(options)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    for style in _options_styles(bare_env).values():
        resolved = storage.resolve_options(f"s3://{bucket}", style)
        fs, path = storage.filesystem(f"s3://{bucket}/x.json", resolved)
        storage.write_json_atomic(fs, path, {"ok": True})
        assert storage.read_json(fs, path) == {"ok": True}

    # with no endpoint in the options the environment's is used, and only for s3:// URLs
    monkeypatch.setenv("AWS_ENDPOINT_URL", bare_env)
    assert storage.resolve_options("s3://b/k")["endpoint_url"] == bare_env
    assert "endpoint_url" not in storage.resolve_options("/tmp/local")
