"""bench/gpu_check.py on a machine without a GPU: a clear message and exit status 2, at once."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no nvidia-smi on this PATH, whatever the host
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "r.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no GPU" in proc.stderr and "nvidia-smi not found" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_failed_phase_fails_the_command(tmp_path, monkeypatch):
    """Up to the GPU boundary (none here): every phase that raises is reported and exit is 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    import torch

    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: None)  # the GPU this host lacks
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "no device (test)")

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available")

    class NoSampler:  # nvidia-smi's utilization log, which this host lacks too
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def summary(self, start, end):
            return {}

    monkeypatch.setattr(gpu_check, "GpuSampler", NoSampler)
    monkeypatch.setattr(gpu_check, "quickstart_config", lambda *a, **k: None)
    monkeypatch.setattr(gpu_check, "bare_engine", broken)
    monkeypatch.setattr(gpu_check, "pipeline_run", broken)
    code = gpu_check.main(["--out", str(tmp_path / "r.json"), "--skip-vllm"])
    assert code == 1
    phases = __import__("json").loads((tmp_path / "r.json").read_text())["phases"]
    assert all("no kernel image" in p["error"] for p in phases.values()) and len(phases) == 2
