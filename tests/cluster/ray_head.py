"""A `ray start --head` cluster of a test's own, in a private Ray temp dir.

`RAY_TMPDIR` names the temp dir: `ray start` records the head's address in
`$RAY_TMPDIR/ray/ray_current_cluster`, and a `ray.init()` run with the same RAY_TMPDIR reads it
there, so a test can put a head "on this machine" for the processes it starts without any other
process on the machine seeing it. `ray stop` cannot be scoped (it kills every Ray process on the
host): `stop` ends exactly the processes that use the test's private temp dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from conftest import free_port

from prefgen.run import jobs

BIN = Path(sys.executable).parent  # the venv's `ray` and `prefgen`


@dataclass
class Head:
    tmpdir: Path  # RAY_TMPDIR for processes that should find this head
    gcs_port: int
    dashboard: str | None  # the Jobs API, http://127.0.0.1:PORT; None without a dashboard
    proc: subprocess.Popen | None = None

    @property
    def current_cluster_file(self) -> Path:
        return self.tmpdir / "ray" / "ray_current_cluster"


def env_for(tmpdir: Path) -> dict[str, str]:
    """This process's environment with no cluster address and `tmpdir` as Ray's temp dir."""
    env = {k: v for k, v in os.environ.items() if k not in jobs.ADDRESS_ENV}
    env["RAY_TMPDIR"] = str(tmpdir)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def private_tmpdir() -> Path:
    # short path: Ray's unix socket paths under it must stay below ~107 characters
    return Path(tempfile.mkdtemp(prefix="pg-lr-", dir="/tmp"))


def start_head(tmpdir: Path, dashboard: bool = True, attempts: int = 3) -> Head:
    """Start a one-node head on loopback and wait until it has recorded its address (and, with
    a dashboard, until its Jobs API answers). Retried: on a loaded machine Ray's fixed 30 s
    wait for its raylet to register can run out."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_head(tmpdir, dashboard)
        except RuntimeError:
            stop(tmpdir)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _start_head(tmpdir: Path, dashboard: bool, timeout_s: float = 180) -> Head:
    dash_port = free_port()
    head = Head(tmpdir, free_port(), f"http://127.0.0.1:{dash_port}" if dashboard else None)
    ports = {
        "port": head.gcs_port,
        "ray-client-server-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
        **({"dashboard-port": dash_port} if dashboard else {}),
    }
    with open(tmpdir / "ray-start.log", "w") as log:
        head.proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                *[f"--{name}={port}" for name, port in ports.items()],
                "--dashboard-host=127.0.0.1",
                f"--include-dashboard={'true' if dashboard else 'false'}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--object-store-memory=200000000",
                f"--temp-dir={tmpdir / 'ray'}",
                "--disable-usage-stats",
            ],
            env=env_for(tmpdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while not _ready(head):
        if head.proc.poll() is not None or time.monotonic() > deadline:
            log_text = (tmpdir / "ray-start.log").read_text()
            raise RuntimeError(f"ray start did not come up:\n{log_text[-3000:]}")
        time.sleep(1)
    return head


def _ready(head: Head) -> bool:
    if not head.current_cluster_file.is_file():
        return False
    if head.dashboard is None:
        return True
    try:
        jobs_client(head).list_jobs()
        return True
    except Exception:  # not up yet: connection refused, 404 while modules load, ...
        return False


def jobs_client(head: Head):
    # prefgen's client sends the machine's Ray auth token, which `ray start` enables when found
    return jobs.client(head.dashboard)


def driver_jobs(head: Head) -> list:
    """Every driver that connected to the head (a `ray.init` from outside counts as one)."""
    return [job for job in jobs_client(head).list_jobs() if str(job.type).endswith("DRIVER")]


def stop(tmpdir: Path, sig: int = signal.SIGTERM) -> None:
    """End every Ray process that uses the private temp dir `tmpdir` (each names it on its
    command line: `ray start --temp-dir`, GCS, raylet, workers; also a local Ray that a test's
    subprocess started there): `sig`, then SIGKILL after a grace period."""
    mine = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(str(tmpdir) in a for a in p.info["cmdline"] or ()):
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in mine:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
