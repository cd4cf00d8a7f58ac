"""Run untrusted Python (a model's solution) against trusted unit tests, and get a verdict the
solution cannot forge.

Code verifiers (PLUM) execute LLM-written code: it must not read the pipeline's secrets, reach the
network or the host's sockets, write outside its scratch space, exhaust the host, or fake its own
pass. Linux only. docs/sandbox.md has the full design, what each host mode guarantees and what was
measured; in short:

- Two processes. The solution runs alone in a fresh interpreter; the tests run in a separate
  tester process that never executes solution code: every use of a solution name is a call over
  a socket, and only plain data (ints, strings, containers...) comes back by value. The tester
  alone holds the result pipe. So patching, printing, exiting, signalling or walking the stack
  in the solution process can change its answers, never the verdict.
- Isolation (`isolate`): PID, network, IPC, UTS and mount namespaces (as root directly, otherwise
  in an unprivileged user namespace), a pivot_root into a read-only view of /usr, /etc and the
  Python install with a private /tmp and /dev/shm as the only writable places, a fresh /proc, no
  capabilities, no_new_privs, a seccomp filter (no new namespaces or mounts, no memfd or SysV/POSIX
  IPC, no ptrace, no signals to the tester), rlimits, and per-run cgroups where the host allows.
- Fail closed: a host that cannot provide the namespaces gets no run at all, and any setup
  error, unexpected exit or protocol anomaly is a `sandbox_error` or `tampered` result, which
  scores 0. A test passes only from the tester's record written after it ran.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefgen.sandbox import cgroup
from prefgen.sandbox import child as sandbox_child
from prefgen.sandbox.child import CHILD_ENV, DETAIL_CHARS

if TYPE_CHECKING:
    from prefgen.config import CodeVerifierConfig

__all__ = ["SandboxResult", "TestCase", "TestOutcome", "run_tests"]

GRACE_S = 5.0  # host backstop past wall_s; the runner itself kills at wall_s
MAX_CHANNEL_BYTES = 1 << 20
LIMIT_FIELDS = ("wall_s", "cpu_s", "memory_mb", "max_processes", "max_file_mb", "workdir_mb")


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
        if self.status in ("tampered", "sandbox_error"):
            return 0
        return sum(t.status == "pass" for t in self.tests)


# ---- host side ---------------------------------------------------------------------------------


def run_tests(
    solution: str, setup: str, tests: list[TestCase], cfg: CodeVerifierConfig
) -> SandboxResult:
    """Run `setup` then each test against `solution` in a fresh sandbox; never raises on bad code.

    A setup failure is blamed on the tests only when the same setup fails the same way against an
    empty solution in a second run: otherwise a solution could break the setup on purpose and get
    "the tests are broken" (unscored) instead of a failing score."""
    result = _run_once(solution, setup, tests, cfg)
    if result.status == "setup_error" and result.blame == "tests" and solution.strip():
        control = _run_once("", setup, tests, cfg)
        if not (control.status == "setup_error" and control.detail == result.detail):
            result.blame = "solution"
            result.detail = (result.detail + " (the setup runs without this solution)")[
                :DETAIL_CHARS
            ]
    return result


def _run_once(solution: str, setup: str, tests: list[TestCase], cfg) -> SandboxResult:
    run_id = secrets.token_hex(6)
    limits = {k: getattr(cfg, k) for k in LIMIT_FIELDS}
    groups, why_not = cgroup.create(run_id, int(cfg.memory_mb), int(cfg.max_processes))
    read_fd, write_fd = os.pipe()
    payload = {
        "solution": solution,
        "setup": setup,
        "tests": [t.code for t in tests],
        "result_fd": write_fd,
        "cgroups": groups.procs_files() if groups else None,
        "no_cgroup": why_not,
        **limits,
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
        oom = groups.oom_kills("solution") if groups else 0
        if groups:
            groups.remove()
    result = _classify(channel, control, host_killed, tests, cfg, oom)
    if groups:
        result.mechanisms["memory"] = groups.describe()
    else:  # init describes its own watch; without a run that got that far, say what is known
        result.mechanisms.setdefault("memory", f"no cgroup ({why_not})")
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


def _records(channel: bytes) -> list[dict] | None:
    """The tester's records; None if the channel holds anything else (it never should)."""
    out = []
    for line in channel.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        out.append(rec)
    return out


def _classify(channel, control, host_killed, tests, cfg, oom_kills=0) -> SandboxResult:
    """Turn the tester's records and the exit statuses into per-test outcomes."""
    ctl: dict = {}
    mechanisms: dict = {}
    for line in control.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            mechanisms.update(rec.pop("mechanisms", None) or {})
            ctl.update(rec)
    outcomes: list[TestOutcome] = []
    phase, status, detail, blame, lost = "start", None, "", "", None
    records = _records(channel)
    if records is None:
        status, detail = "sandbox_error", "unreadable record on the result channel"
        records = []
    for rec in records:
        event = rec.get("e")
        if phase == "start" and event == "sandbox":
            mechanisms.update(rec.get("mechanisms") or {})
            phase = "sandbox"
        elif event == "error":
            status, detail = "sandbox_error", str(rec.get("detail", ""))
            break
        elif phase in ("sandbox", "tests") and event == "lost":
            lost = rec
            break
        elif phase == "sandbox" and event in ("load_error", "setup_error"):
            status, detail, phase = event, str(rec.get("detail", "")), "end"
            blame = "solution" if event == "load_error" else str(rec.get("blame", "solution"))
        elif phase == "sandbox" and event == "loaded":
            phase = "tests"
        elif phase == "tests" and event == "test" and rec.get("i") == len(outcomes) < len(tests):
            st = rec.get("status") if rec.get("status") in ("pass", "fail", "crash") else "fail"
            outcomes.append(TestOutcome(tests[len(outcomes)].name, st, str(rec.get("detail", ""))))
        elif phase == "tests" and event == "done" and len(outcomes) == len(tests):
            phase, status = "end", "ok"
        else:
            status, detail = "sandbox_error", f"unexpected record {event!r} in phase {phase}"
            break
    if status is None and ctl.get("error"):
        status, detail = "sandbox_error", str(ctl["error"])
    running = None  # (status, detail) of the test that was running when the run ended
    if status is None:
        oom_kills = oom_kills or ctl.get("memory_kills", 0)  # the cgroup's, or init's watch
        status, running = _ending(ctl, lost, host_killed, cfg, oom_kills)
        detail = running[1]
        if lost and lost.get("phase") == "start" or status == "sandbox_error":
            running = None
        elif phase != "tests":
            detail, running = detail + " before the tests ran", None
    reason = f"not run: {status}" + (f" ({detail})" if detail else "")
    for i, test in enumerate(tests[len(outcomes) :]):
        mine = running if running and i == 0 else ("not_run", reason[:DETAIL_CHARS])
        outcomes.append(TestOutcome(test.name, *mine))
    return SandboxResult(status, outcomes, detail[:DETAIL_CHARS], mechanisms, blame=blame)


def _ending(ctl: dict, lost: dict | None, host_killed: bool, cfg, oom_kills: int):
    """(run status, (test status, detail)) for a run that stopped before its `done` record."""
    if host_killed or ctl.get("timed_out"):
        return "timeout", ("timeout", f"wall-time limit {cfg.wall_s}s")
    if lost is None:  # the tester stopped without a verdict: it ran out of CPU, or it broke
        wait = ctl.get("tester_status")
        if isinstance(wait, int) and os.WIFSIGNALED(wait) and _cpu_hit(wait, ctl, "tester", cfg):
            return "cpu_limit", ("timeout", f"CPU-time limit {cfg.cpu_s}s (in the tests)")
        return "sandbox_error", ("crash", f"the tester ended without a verdict ({_wait(wait)})")
    wait = ctl.get("solution_status")
    if lost.get("phase") == "start":
        return "sandbox_error", ("crash", f"the solution process failed to start ({_wait(wait)})")
    if ctl.get("solution_killed") or not isinstance(wait, int):
        why = str(lost.get("why", ""))
        return "tampered", ("crash", f"the solution process broke the call protocol: {why}")
    if os.WIFSIGNALED(wait):
        sig = os.WTERMSIG(wait)
        if _cpu_hit(wait, ctl, "solution", cfg):
            return "cpu_limit", ("timeout", f"CPU-time limit {cfg.cpu_s}s")
        if sig == signal.SIGKILL and oom_kills:
            return "crashed", ("crash", f"killed by SIGKILL (memory limit {cfg.memory_mb} MB)")
        return "crashed", ("crash", f"killed by {_signal_name(sig)}")
    return "exited", ("crash", f"process exited with code {os.WEXITSTATUS(wait)}")


def _cpu_hit(wait: int, ctl: dict, role: str, cfg) -> bool:
    sig = os.WTERMSIG(wait)
    used = ctl.get(f"{role}_cpu_s", 0) or 0
    return sig == signal.SIGXCPU or (sig == signal.SIGKILL and used >= cfg.cpu_s - 0.05)


def _wait(wait) -> str:
    if not isinstance(wait, int):
        return "no exit status"
    if os.WIFSIGNALED(wait):
        return f"killed by {_signal_name(os.WTERMSIG(wait))}"
    return f"exit code {os.WEXITSTATUS(wait)}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
