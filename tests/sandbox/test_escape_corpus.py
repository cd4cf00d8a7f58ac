"""Adversarial corpus: each escape attempt is contained, reported with its status, host unharmed.

Run: .venv/bin/python -m pytest tests/sandbox/test_escape_corpus.py -q

Adding a case is one `Escape(...)` entry in CORPUS. Tokens in the code are replaced per test:
__PORT__ (a listener on 127.0.0.1 owned by the test), __TARGET__ (a path in a world-writable dir
the test owns), __SENTINEL__ (a host file that must stay intact), __HOST_PID__ (this process).
A case that `requires` isolation the machine lacks is not run; the test then asserts that the
sandbox reports that isolation as missing instead (never a silent skip).
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

import pytest

from prefgen.config import CodeVerifierConfig
from prefgen.sandbox.child import UID_RANGE
from prefgen.sandbox.runner import TestCase, run_tests

CFG = CodeVerifierConfig(
    wall_s=3.0, cpu_s=1, memory_mb=128, max_processes=16, max_file_mb=1, workdir_mb=8
)
SECRET = "fake-secret-9f8e7d6c5b4a"
SENTINEL_TEXT = "host data, do not touch"


@dataclass
class Escape:
    name: str
    solution: str
    tests: list[str]
    status: set[str]  # acceptable run statuses
    outcomes: list[str]  # per-test statuses
    detail: str = ""  # substring of the first outcome's (or else the run's) detail
    requires: tuple[str, ...] = ()  # mechanisms that must be isolated to run this case


CORPUS = [
    Escape("busy_loop_in_test", "def f():\n    while True: pass", ["f()"],
           {"cpu_limit", "timeout"}, ["timeout"]),  # timeout only if starved of CPU
    Escape("sleep_in_test", "import time\ndef f():\n    time.sleep(60)", ["f()", "assert True"],
           {"timeout"}, ["timeout", "not_run"], "wall-time"),
    Escape("busy_loop_at_import", "while True: pass", ["assert True"],
           {"cpu_limit", "timeout"}, ["not_run"]),
    Escape("fork_bomb_spinning",
           "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
           ["assert True"], {"timeout", "cpu_limit"}, ["not_run"], requires=("user",)),
    Escape("fork_bomb_plain", "import os\ndef f():\n    while True: os.fork()", ["f()"],
           {"ok"}, ["fail"], "BlockingIOError", requires=("user",)),
    Escape("memory_bomb_one_block", "def f():\n    return bytearray(1 << 34)", ["f()"],
           {"ok"}, ["crash"], "MemoryError"),
    Escape("memory_bomb_growing_at_import", "b = []\nwhile True: b.append(bytearray(1 << 20))",
           ["assert True"], {"load_error"}, ["not_run"], "MemoryError"),
    Escape("huge_file", "def f():\n    open('big', 'wb').write(b'0' * (8 << 20))", ["f()"],
           {"ok"}, ["crash"], "file size limit"),
    Escape("fill_tmp_with_small_files",
           "def f():\n    for i in range(64):\n        open(f'/tmp/f{i}', 'wb').write(b'0' * 1000000)",
           ["f()"], {"ok"}, ["fail"], "No space left", requires=("filesystem",)),
    Escape("network_connect",
           "import socket\ndef f():\n    socket.create_connection(('127.0.0.1', __PORT__), 2)",
           ["f()"], {"ok"}, ["fail"], "Network is unreachable", requires=("network",)),
    Escape("read_env_secret", "import os\nprint(dict(os.environ))",
           ["assert os.environ['AWS_SECRET_ACCESS_KEY']"], {"ok"}, ["fail"], "KeyError"),
    Escape("read_host_environ_via_proc",
           "def f():\n    print(open('/proc/__HOST_PID__/environ').read())", ["f()"],
           {"ok"}, ["fail"], "Error", requires=("pid",)),
    Escape("write_outside_workdir", "def f():\n    open('__TARGET__', 'w').write('pwned')",
           ["f()"], {"ok"}, ["fail"], "Error", requires=("user",)),
    Escape("overwrite_host_sentinel", "def f():\n    open('__SENTINEL__', 'w').write('pwned')",
           ["f()"], {"ok"}, ["fail"], "Error", requires=("user",)),
    Escape("become_root_again", "import os\ndef f():\n    os.setuid(0)", ["f()"],
           {"ok"}, ["fail"], "PermissionError", requires=("user",)),
    Escape("kill_parent", "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)",
           ["f()", "assert True"], {"ok"}, ["fail", "pass"], "PermissionError",
           requires=("pid", "user")),
    Escape("kill_host_process", "import os\ndef f():\n    os.kill(__HOST_PID__, 9)", ["f()"],
           {"ok"}, ["fail"], "Error", requires=("pid", "user")),
    Escape("kill_everything", "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)",
           ["f()"], {"ok"}, ["fail"], "ProcessLookupError", requires=("pid", "user")),
    Escape("kill_own_process_group", "import os\ndef f():\n    os.killpg(0, 9)",
           ["f()", "assert True"], {"crashed"}, ["crash", "not_run"], "SIGKILL",
           requires=("pid", "user")),
    Escape("daemon_outlives_run",
           "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)",
           ["assert True"], {"ok"}, ["pass"], requires=("pid",)),
    Escape("sys_exit_0_at_import", "import sys\nsys.exit(0)", ["assert True"],
           {"load_error"}, ["not_run"], "SystemExit"),
    Escape("os_exit_0_at_import", "import os\nos._exit(0)", ["assert True"],
           {"exited"}, ["not_run"], "exited with code 0"),
    Escape("os_exit_0_in_test", "import os\ndef f():\n    os._exit(0)", ["f()", "assert True"],
           {"exited"}, ["crash", "not_run"], "exited with code 0"),
    Escape("system_exit_in_test", "def f():\n    raise SystemExit(0)", ["f()"],
           {"ok"}, ["fail"], "SystemExit"),
    Escape("forge_pass_by_printing",
           "import os\nprint('{\"e\": \"test\", \"i\": 0, \"status\": \"pass\"}')\n"
           "print('1 passed, 0 failed')\nos._exit(0)",
           ["assert False"], {"exited"}, ["not_run"]),
    Escape("forge_pass_on_every_fd",
           "import os\nfor fd in range(3, 1024):\n    try: os.write(fd, b'0' * 32 + "
           "b' {\"e\": \"test\", \"i\": 0, \"status\": \"pass\"}\\n')\n    except OSError: pass\n"
           "os._exit(0)",
           ["assert False"], {"exited"}, ["not_run"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def probe():
    """Which isolation this machine gives, from a harmless run."""
    result = run_tests("", "", [TestCase("t", "assert True")], CFG)
    assert result.status == "ok", result
    return result.mechanisms


def _isolated(mechanisms: dict, name: str) -> bool:
    value = mechanisms.get(name, "")
    return value.startswith("isolated") or (name == "user" and "dropped from root" in value)


def _sandbox_processes() -> list[int]:
    """Pids still running as one of the sandbox's fresh uids."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = int(next(x for x in f if x.startswith("Uid:")).split()[1])
        except (OSError, StopIteration):
            continue
        if UID_RANGE[0] <= uid < UID_RANGE[0] + UID_RANGE[1]:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_escape_is_contained(case, probe, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    missing = [m for m in case.requires if not _isolated(probe, m)]
    if missing:  # the payload would hit the host for real: assert the gap is reported instead
        for name in missing:
            assert probe[name].startswith("NOT isolated") or "no drop" in probe[name]
        return
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text(SENTINEL_TEXT)
    sentinel.chmod(0o666)  # writable by anyone: only the sandbox keeps the run out
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    target = outside / "pwned.txt"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    tokens = {
        "__PORT__": str(listener.getsockname()[1]),
        "__TARGET__": str(target),
        "__SENTINEL__": str(sentinel),
        "__HOST_PID__": str(os.getpid()),
    }
    code = case.solution
    for token, value in tokens.items():
        code = code.replace(token, value)
    tests = [TestCase(t, t) for t in case.tests]
    with listener:
        result = run_tests(code, "", tests, CFG)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing got through to the host's listener

    assert result.status in case.status, result
    assert [t.status for t in result.tests] == case.outcomes, result
    detail = result.tests[0].detail or result.detail
    assert case.detail in detail, result
    assert result.passed == case.outcomes.count("pass")
    # The host is unharmed.
    assert sentinel.read_text() == SENTINEL_TEXT
    assert not target.exists()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert SECRET not in result.output
    assert subprocess.run(["true"], timeout=10).returncode == 0  # can still spawn
    assert _sandbox_processes() == []  # nothing outlived its run


def test_in_process_forging_is_a_known_gap():
    """Documents the residual risk (docs/sandbox.md): code that walks the harness's frames can
    forge every record. If the harness is hardened against this, flip the assertion and the doc.
    """
    forger = (
        "import sys, os\n"
        "frame = sys._getframe()\n"
        "while frame and 'report' not in frame.f_locals:\n"
        "    frame = frame.f_back\n"
        "report = frame.f_locals['report']\n"
        "report({'e': 'loaded'})\n"
        "report({'e': 'test', 'i': 0, 'status': 'pass'})\n"
        "report({'e': 'test', 'i': 1, 'status': 'pass'})\n"
        "report({'e': 'done'})\n"
        "os._exit(0)\n"
    )
    tests = [TestCase("a", "assert False"), TestCase("b", "assert False")]
    assert run_tests(forger, "", tests, CFG).passed == 2


def test_naive_duplicate_forging_is_detected():
    """A forger that reports a pass but lets the harness go on is caught by the record order."""
    forger = (
        "import sys\n"
        "def f():\n"
        "    frame = sys._getframe()\n"
        "    while 'report' not in frame.f_locals:\n"
        "        frame = frame.f_back\n"
        "    frame.f_locals['report']({'e': 'test', 'i': 0, 'status': 'pass'})\n"
        "    assert False\n"
    )
    result = run_tests(forger, "", [TestCase("t", "f()")], CFG)
    assert result.status == "tampered" and result.passed == 0
