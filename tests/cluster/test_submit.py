"""`prefgen submit` / `prefgen jobs` against a real Ray cluster started with `ray start --head`.

The cluster is this module's own: its own ports, its own temp dir, its own process group, so it
neither finds nor disturbs the session's local Ray (tests/conftest.py) or any other Ray on the
machine. `ray stop` cannot be scoped (it kills every Ray process on the host), so teardown ends
exactly the processes descended from this module's `ray start --block`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from conftest import PROMPTS, QUICKSTART, ROOT, free_port, tiny_overrides

from prefgen.cli import main
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.run import jobs

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent  # the venv's `ray` and `prefgen`
LIMIT = 2
SUBMITTED: dict[str, str] = {}  # job ids shared by the tests below, in file order


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster on loopback; yields its dashboard (Jobs API) address."""
    # short path: Ray's unix socket paths under it must stay below ~107 characters
    temp_dir = tempfile.mkdtemp(prefix="pg-ray-", dir="/tmp")
    dashboard = free_port()
    ports = {
        "port": free_port(),
        "dashboard-port": dashboard,
        "ray-client-server-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if k not in jobs.ADDRESS_ENV}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # jobs run `prefgen` from here
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            *[f"--{name}={port}" for name, port in ports.items()],
            "--dashboard-host=127.0.0.1",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--object-store-memory=300000000",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_jobs_api(address, proc, Path(temp_dir) / "ray-start.log")
        yield address
    finally:
        _stop_cluster(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(address: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            jobs.client(address).list_jobs()
            return
        except Exception:  # not up yet: connection refused, 404 while modules load, ...
            time.sleep(1)
    pytest.fail(f"no Jobs API at {address} after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _stop_cluster(proc: subprocess.Popen) -> None:
    """`ray stop` for this cluster only: SIGTERM to everything descended from our `ray start`
    (job drivers run in sessions of their own, so the process group alone would miss them),
    then SIGKILL to whatever is left after a grace period."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    proc.wait(timeout=5)


@contextmanager
def _watchdog(address: str, submission_id: str, seconds: float = 300):
    """Stop the job if it outlives `seconds`, so a hung pipeline fails the test (as STOPPED)
    instead of blocking the suite."""
    timer = threading.Timer(seconds, lambda: jobs.client(address).stop_job(submission_id))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _input_ids(limit: int) -> set[str]:
    return {json.loads(line)["id"] for line in PROMPTS.read_text().splitlines()[:limit]}


def _prefgen(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- in file order: nothing submitted yet, then a run, then looking after jobs ----------------


def test_a_bad_config_fails_here_before_anything_is_submitted(head, capsys):
    rc, _, err = _prefgen(
        capsys,
        "submit",
        QUICKSTART,
        "generate.max_tokenz=8",
        "--address",
        head,
        "--working-dir",
        ROOT,
    )
    assert rc == 2
    assert "nothing submitted" in err and "generate.max_tokenz" in err and "max_tokens" in err
    rc, _, err = _prefgen(capsys, "submit", ROOT / "nope.yaml", "--address", head)
    assert rc == 2 and "config file not found" in err
    rc, _, err = _prefgen(
        capsys, "submit", QUICKSTART, "--address", head, "--working-dir", ROOT / "docs"
    )
    assert rc == 2 and "outside --working-dir" in err
    assert jobs.client(head).list_jobs() == []


def test_submit_runs_the_pipeline_on_the_cluster_and_waits(head, capsys, tmp_path_factory):
    out = tmp_path_factory.mktemp("submit") / "run"
    overrides = tiny_overrides(out, limit=LIMIT, max_tokens=8)
    job_id = SUBMITTED["ok"] = f"prefgen-test-{uuid.uuid4().hex[:8]}"
    with _watchdog(head, job_id):
        rc, stdout, _ = _prefgen(
            capsys,
            "submit",
            QUICKSTART,
            *overrides,
            "--address",
            head,
            "--working-dir",
            ROOT,
            "--submission-id",
            job_id,
        )
    assert f"submitted job {job_id}" in stdout
    assert rc == 0, stdout[-3000:]
    assert f"job {job_id} SUCCEEDED" in stdout
    assert "pairs out" in stdout  # the job's own summary, followed from its logs

    manifest = read_manifest(str(out))
    assert manifest is not None, "the job committed no manifest"
    counts = manifest["counts"]
    pairs, responses, rejects = (
        read_rows(str(out), manifest, t) for t in ("pairs", "responses", "rejects")
    )
    assert counts["records_in"] == LIMIT
    assert counts["pairs"] == len(pairs) and counts["responses"] == len(responses)
    paired, rejected = {p["prompt_id"] for p in pairs}, {r["id"] for r in rejects}
    assert paired | rejected == _input_ids(LIMIT) and not paired & rejected
    assert {r["prompt_id"] for r in responses} == _input_ids(LIMIT)


def test_jobs_status_logs_and_list(head, capsys):
    job_id = SUBMITTED["ok"]
    rc, out, _ = _prefgen(capsys, "jobs", "status", job_id, "--address", head)
    assert rc == 0 and out.split()[:2] == [job_id, "SUCCEEDED"]
    rc, out, _ = _prefgen(capsys, "jobs", "logs", job_id, "--address", head)
    assert rc == 0 and "pairs out" in out
    rc, out, _ = _prefgen(capsys, "jobs", "list", "--address", head)
    line = next(line for line in out.splitlines() if line.startswith(job_id))
    assert "SUCCEEDED" in line and "quickstart" in line and "prefgen run" in line
    rc, _, err = _prefgen(capsys, "jobs", "status", "raysubmit_nosuchjob", "--address", head)
    assert rc == 2 and "raysubmit_nosuchjob" in err


def test_a_job_that_fails_on_the_cluster_fails_the_command(head, capsys, tmp_path_factory):
    """The config is valid here; the input exists nowhere on the cluster, so the job fails."""
    out = tmp_path_factory.mktemp("fail") / "run"
    rc, stdout, _ = _prefgen(
        capsys,
        "submit",
        QUICKSTART,
        f"output.path={out}",
        "input.path=/nonexistent/prompts.jsonl",
        "--address",
        head,
        "--working-dir",
        ROOT,
    )
    assert rc == 1 and "FAILED" in stdout and "/nonexistent/prompts.jsonl" in stdout


def test_ray_job_submit_as_documented_then_prefgen_jobs_stop(head, capsys, tmp_path_factory):
    """cluster/README.md's plain-Ray form, run from the repository root; then stop it."""
    out = tmp_path_factory.mktemp("stop") / "run"
    env = {k: v for k, v in os.environ.items() if k not in jobs.ADDRESS_ENV}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if jobs.auth_headers():
        env["RAY_AUTH_MODE"] = "token"  # a token exists, so the cluster requires it
    done = subprocess.run(
        [
            *(str(BIN / "ray"), "job", "submit", "--address", head, "--working-dir", "."),
            "--no-wait",
            "--",
            *("prefgen", "run", "pipelines/quickstart.yaml", f"output.path={out}", "limit=2"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = re.search(r"(raysubmit_\w+)", done.stdout + done.stderr).group(1)

    client = jobs.client(head)
    deadline = time.monotonic() + 60
    while str(client.get_job_status(job_id)) == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(client.get_job_status(job_id)) == "RUNNING"
    rc, stdout, _ = _prefgen(capsys, "jobs", "stop", job_id, "--address", head)
    assert rc == 0 and stdout.split()[:2] == [job_id, "STOPPED"]
    assert read_manifest(str(out)) is None  # a stopped run commits nothing


def test_runtime_env_and_entrypoint_ship_prefgen_only_when_asked():
    """No cluster needed: what `submit` would send, with and without --install-prefgen."""
    plain = jobs.runtime_env(ROOT)
    assert plain["working_dir"] == str(ROOT) and "pip" not in plain and "py_modules" not in plain
    assert {".venv", ".git", "runs"} <= set(plain["excludes"])
    assert (
        jobs.entrypoint("pipelines/q.yaml", ["name=a b"])
        == "prefgen run pipelines/q.yaml 'name=a b'"
    )

    shipped = jobs.runtime_env(ROOT, pip=["extra-pkg==1.0"], install_prefgen=True)
    assert shipped["py_modules"] == [str(ROOT / "src" / "prefgen")]
    pins = shipped["pip"]
    assert pins[-1] == "extra-pkg==1.0"
    assert any(p.startswith("torch==") for p in pins) and any(
        p.startswith("pyarrow==") for p in pins
    )
    assert not any(p.lower().startswith("ray") for p in pins), "the cluster's own Ray must serve"
    assert all("==" in p and "+" not in p for p in pins)  # pinned, without local labels (+cpu)
    assert jobs.entrypoint("q.yaml", [], install_prefgen=True) == "python -m prefgen.cli run q.yaml"
