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
