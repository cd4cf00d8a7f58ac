"""Run untrusted Python (a model's solution plus its unit tests) in a locked-down child.

Code verifiers (PLUM) execute LLM-written code: it must not read the pipeline's secrets, reach
the network, fill the disk, exhaust the host, or fake its own pass. Linux only; every layer is
detected at run time and listed in `SandboxResult.mechanisms` (docs/sandbox.md has what was
measured where).

How: the child side (`prefgen.sandbox.child`) runs as `python -I -S sandbox_child.py` (no
site-packages, no script dir on sys.path, PYTHON* ignored) in its own session with a
two-variable environment, so the parent's environment never reaches it. The runner unshares PID, network and IPC namespaces
and forks an init (pid 1 of the new PID namespace), which unshares the mount namespace, hides
/root, /home and the temp dirs behind tmpfs (re-binding the Python install read-only), mounts a
fresh /proc and forks the harness. The harness gets an empty tmpfs work dir, rlimits (CPU, address
space, processes, file size, no core), a fresh unprivileged uid when started as root (it refuses
to run as root) and no_new_privs; then it loads the solution and runs each test, writing one
record per test to a pipe at a random fd, tagged with a random nonce. The runner enforces the
wall limit by killing init, which takes the whole PID namespace (every descendant) with it. A
test passes only if its record arrives, in order, after it ran: exit codes never count.

What is NOT covered:
- Forging from inside the process. The solution shares the harness's process, so deliberate
  code can find the fd and nonce (stack frames, gc) or monkeypatch the harness. The protocol
  stops accidental and naive cheating (printing "PASS", exiting 0 early, forked children
  reporting), not an adversary. Objects whose __eq__ is always True also pass `==` asserts.
- The kernel: no seccomp filter; a kernel exploit escapes everything.
- Aggregate memory: RLIMIT_AS is per process, so one run may use max_processes x memory_mb
  (no cgroup), plus up to 3 x workdir_mb of tmpfs.
- Reads of world-readable files outside the hidden dirs (/etc, /usr, the project checkout).
- Without root (no uid drop, no namespaces) only rlimits apply: the network is reachable, a
  daemonised descendant can outlive the run, and files are writable wherever the user can write.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefgen.sandbox import child as sandbox_child
from prefgen.sandbox.child import CHILD_ENV, DETAIL_CHARS

if TYPE_CHECKING:
    from prefgen.config import CodeVerifierConfig

__all__ = ["SandboxResult", "TestCase", "TestOutcome", "run_tests"]

GRACE_S = 5.0  # host backstop past wall_s; the runner itself kills at wall_s
MAX_CHANNEL_BYTES = 1 << 20


@dataclass
class TestCase:
    __test__ = False  # not a pytest class, despite the name

    name: str
    code: str  # statements run in the test namespace; e.g. an assert, or "test_x()"


@dataclass
class TestOutcome:
    __test__ = False

    name: str
    status: str  # pass | fail | timeout | crash | not_run
    detail: str = ""


@dataclass
class SandboxResult:
    # ok | load_error | setup_error | exited | crashed | timeout | cpu_limit | tampered |
    # sandbox_error
    status: str
    tests: list[TestOutcome]
    detail: str = ""
    mechanisms: dict = field(default_factory=dict)
    output: str = ""  # tail of the run's stdout + stderr
    wall_s: float = 0.0
    blame: str = ""  # setup_error: "tests" (e.g. a missing module) or "solution" (missing name)

    @property
    def passed(self) -> int:
        return 0 if self.status == "tampered" else sum(t.status == "pass" for t in self.tests)


# ---- host side ---------------------------------------------------------------------------------


def run_tests(
    solution: str, setup: str, tests: list[TestCase], cfg: CodeVerifierConfig
) -> SandboxResult:
    """Run `setup` then each test against `solution` in a fresh sandbox; never raises on bad code."""
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    workdir = tempfile.mkdtemp(prefix="prefgen-sandbox-")
    payload = {
        "solution": solution,
        "setup": setup,
        "tests": [t.code for t in tests],
        "nonce": nonce,
        "result_fd": write_fd,
        "workdir": workdir,
        **{k: getattr(cfg, k) for k in ("wall_s", "cpu_s", "memory_mb", "max_processes")},
        **{k: getattr(cfg, k) for k in ("max_file_mb", "workdir_mb")},
    }
    start = time.monotonic()
    try:
        with tempfile.TemporaryFile() as output:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(sandbox_child.__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=output,
                pass_fds=(write_fd,),
                env=CHILD_ENV,
                cwd="/",
                start_new_session=True,
            )
            os.close(write_fd)
            write_fd = -1
            try:
                proc.stdin.write(json.dumps(payload).encode())
                proc.stdin.close()
            except OSError:
                pass  # the runner died early; its control record (or none) tells why
            channel, control, host_killed = _collect(proc, read_fd, start + cfg.wall_s + GRACE_S)
            size = output.seek(0, os.SEEK_END)
            output.seek(max(0, size - 2000))
            tail = output.read().decode("utf-8", "replace")
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    result = _classify(channel, control, host_killed, nonce, tests, cfg)
    result.output, result.wall_s = tail, round(time.monotonic() - start, 3)
    return result


def _collect(proc: subprocess.Popen, read_fd: int, deadline: float) -> tuple[bytes, bytes, bool]:
    """Drain the result channel and the runner's control pipe until both close or time is up."""
    control_fd = proc.stdout.fileno()
    data = {read_fd: b"", control_fd: b""}
    with selectors.DefaultSelector() as sel:
        for fd in data:
            sel.register(fd, selectors.EVENT_READ)
        killed = False
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if killed or control_fd not in sel.get_map():
                    break  # the runner is done; only a stray descendant holds the channel
                killed = True  # runner stuck: kill its session; init dies with it (PDEATHSIG)
                os.killpg(proc.pid, signal.SIGKILL)
                deadline = time.monotonic() + 2.0
                continue
            for key, _ in sel.select(min(remaining, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    if key.fd == control_fd:  # runner exited: the channel closes right after
                        deadline = min(deadline, time.monotonic() + 1.0)
                elif len(data[key.fd]) < MAX_CHANNEL_BYTES:  # past the cap: read, discard
                    data[key.fd] += chunk
    proc.stdout.close()
    proc.wait()
    return data[read_fd], data[control_fd], killed


def _classify(channel, control, host_killed, nonce, tests, cfg) -> SandboxResult:
    """Turn the records into per-test outcomes. Only records with the nonce, in order, count."""
    ctl = {}
    for line in control.decode("utf-8", "replace").splitlines():
        try:
            ctl.update(json.loads(line))
        except ValueError:
            pass
    mechanisms = dict(ctl.get("mechanisms", {}))
    outcomes: list[TestOutcome] = []
    phase, status, detail, blame = "start", None, "", ""
    for line in channel.decode("utf-8", "replace").splitlines():
        tag, _, body = line.partition(" ")
        if tag != nonce:
            continue  # not from the harness: ignored
        try:
            rec = json.loads(body)
            event = rec["e"]
        except (ValueError, KeyError, TypeError):
            phase, status = "tampered", "tampered"
            break
        if phase == "start" and event == "sandbox":
            mechanisms.update(rec.get("mechanisms", {}))
            phase = "sandbox"
            if rec.get("error"):
                status, detail = "sandbox_error", rec["error"]
        elif phase == "sandbox" and event in ("load_error", "setup_error"):
            status, detail, phase = event, rec.get("detail", ""), "end"
            blame = rec.get("blame", "solution")
        elif phase == "sandbox" and event == "loaded":
            phase = "tests"
        elif phase == "tests" and event == "test" and rec.get("i") == len(outcomes) < len(tests):
            st = rec.get("status") if rec.get("status") in ("pass", "fail", "crash") else "fail"
            outcomes.append(TestOutcome(tests[len(outcomes)].name, st, str(rec.get("detail", ""))))
        elif phase == "tests" and event == "done" and len(outcomes) == len(tests):
            phase, status = "end", "ok"
        else:
            phase, status, detail = "tampered", "tampered", f"unexpected record {event!r}"
            break
    if ctl.get("error") and status is None:
        status, detail = "sandbox_error", ctl["error"]
    running = None  # status of the test that was running when the run ended
    if status is None:
        wait = ctl.get("harness_status")
        if host_killed or ctl.get("timed_out"):
            status, running = "timeout", ("timeout", f"wall-time limit {cfg.wall_s}s")
        elif wait is None:
            status, detail = "sandbox_error", "no exit status from the sandbox init"
        elif os.WIFSIGNALED(wait):
            sig = os.WTERMSIG(wait)
            cpu_hit = sig == signal.SIGXCPU or ctl.get("cpu_s", 0) >= cfg.cpu_s - 0.05
            if cpu_hit and sig in (signal.SIGXCPU, signal.SIGKILL):
                status, running = "cpu_limit", ("timeout", f"CPU-time limit {cfg.cpu_s}s")
            else:
                status, running = "crashed", ("crash", f"killed by {_signal_name(sig)}")
        else:
            code = os.WEXITSTATUS(wait)
            status, running = "exited", ("crash", f"process exited with code {code}")
        if phase in ("start", "sandbox"):
            detail, running = (running[1] if running else detail) + " before the tests ran", None
        elif running:
            detail = running[1]
    for i, test in enumerate(tests[len(outcomes) :]):
        outcomes.append(TestOutcome(test.name, *(running if running and i == 0 else ("not_run",))))
    return SandboxResult(status, outcomes, detail[:DETAIL_CHARS], mechanisms, blame=blame)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
