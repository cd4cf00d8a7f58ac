"""The escape corpus and a runner that checks the host after each case.

Plain Python (no pytest), so `test_nonroot.py` can run the same cases as an unprivileged user
under a system interpreter. Adding a case is one `Escape(...)` entry. Tokens in the code are
replaced per run:

  __PORT__          a TCP listener on 127.0.0.1 owned by the host side
  __ABSTRACT__      an abstract Unix socket listening on the host
  __UNIX_SOCKET__   a filesystem Unix socket listening on the host (like Ray's raylet socket)
  __TARGET__        a path in a world-writable host dir the runner owns (must stay absent)
  __SENTINEL__      a world-writable host file that must stay intact
  __HOST_PID__      the host process that runs the sandbox (its environ holds the secret)
  __TAG__           a unique name: host files /var/tmp/__TAG__ etc. must not appear

Every case's tests are written so that a pass is only possible if the sandbox failed to contain
the attempt, or the test is a plain `assert True` that shows the run went on. `run_case` returns
what happened plus the host checks; the tests assert on it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field

SECRET = "fake-secret-9f8e7d6c5b4a"
SENTINEL_TEXT = "host data, do not touch"
LIMITS = dict(wall_s=3.0, cpu_s=1, memory_mb=128, max_processes=16, max_file_mb=1, workdir_mb=8)
HOST_DIRS = ("/var/tmp", "/dev/shm", "/run/lock", "/tmp")  # world-writable on most hosts


@dataclass
class Escape:
    name: str
    solution: str
    tests: list[str]
    status: set[str]  # acceptable run statuses
    outcomes: list[str]  # per-test statuses
    detail: str = ""  # substring of the first outcome's (or else the run's) detail
    kind: str = "misc"  # the escape class it belongs to (for the report)
    extra: dict = field(default_factory=dict)  # e.g. {"blame": "solution"}


WALK = (
    "import os, sys, stat\n"
    "SKIP = ('/proc', '/usr', os.path.realpath(sys.base_prefix))\n"
    "def visible():\n"
    "    for root, dirs, files in os.walk('/'):\n"
    "        if root.startswith(SKIP):\n"
    "            dirs[:] = []\n"
    "            continue\n"
    "        yield root, [os.path.join(root, f) for f in files]\n"
)

CORPUS = [
    # ---- resources: loops, forks, memory, files ----
    Escape("busy_loop_in_test", "def f():\n    while True: pass", ["f()"],
           {"cpu_limit", "timeout"}, ["timeout"], kind="cpu"),
    Escape("sleep_in_test", "import time\ndef f():\n    time.sleep(60)", ["f()", "assert True"],
           {"timeout"}, ["timeout", "not_run"], "wall-time", kind="cpu"),
    Escape("busy_loop_at_import", "while True: pass", ["assert True"],
           {"cpu_limit", "timeout"}, ["not_run"], kind="cpu"),
    Escape("fork_bomb_spinning",
           "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
           ["assert True"], {"timeout", "cpu_limit"}, ["not_run"], kind="processes"),
    Escape("fork_bomb_plain", "import os\ndef f():\n    while True: os.fork()", ["f()"],
           {"ok"}, ["fail"], "BlockingIOError", kind="processes"),
    Escape("memory_bomb_one_block", "def f():\n    return bytearray(1 << 34)", ["f()"],
           {"ok"}, ["crash"], "MemoryError", kind="memory"),
    Escape("memory_bomb_growing_at_import", "b = []\nwhile True: b.append(bytearray(1 << 20))",
           ["assert True"], {"load_error"}, ["not_run"], "MemoryError", kind="memory"),
    Escape("memory_spread_over_processes", "import os, time\n"
           "def f():\n    pids = []\n    for _ in range(4):\n        pid = os.fork()\n"
           "        if pid == 0:\n            b = bytearray(100 << 20)\n"
           "            for i in range(0, len(b), 4096):\n                b[i] = 1\n"
           "            time.sleep(2)\n            os._exit(0)\n        pids.append(pid)\n"
           "    return sum(os.waitpid(p, 0)[1] == 0 for p in pids)",
           ["assert f() <= 1, f()"], {"ok"}, ["pass"], kind="memory",
           extra={"limits": {"wall_s": 8.0}}),  # 4 x 100 MB held at once: at most one fits
    Escape("huge_file", "def f():\n    open('big', 'wb').write(b'0' * (8 << 20))", ["f()"],
           {"ok"}, ["crash"], "file size limit", kind="disk"),
    Escape("fill_tmp_with_small_files",
           "def f():\n    for i in range(64):\n        open(f'/tmp/f{i}', 'wb').write(b'0' * 1000000)",
           ["f()"], {"ok"}, ["fail"], "No space left", kind="disk"),
    # ---- memory that is not address space ----
    Escape("memfd_create", "import os\ndef f():\n    fd = os.memfd_create('x')\n"
           "    os.ftruncate(fd, 1 << 30)\n    os.write(fd, b'0' * (1 << 20))", ["f()"],
           {"ok"}, ["fail"], "PermissionError", kind="memory"),
    Escape("memfd_raw_syscall", "import ctypes, platform\n"
           "NR = {'x86_64': 319, 'aarch64': 279}[platform.machine()]\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    fd = libc.syscall(NR, b'x', 0)\n    assert fd >= 0, f'errno {ctypes.get_errno()}'",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("user_namespace_for_own_tmpfs", "import ctypes\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    assert libc.unshare(0x10000000 | 0x20000) == 0, f'errno {ctypes.get_errno()}'\n"
           "    assert libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, b'size=4g') == 0",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("clone_into_user_namespace", "import ctypes, os, platform\n"
           "NR = {'x86_64': 56, 'aarch64': 220}[platform.machine()]\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    pid = libc.syscall(NR, 0x10000000 | 17, 0, 0, 0, 0)\n"
           "    if pid == 0:\n        os._exit(0)\n    assert pid > 0, f'errno {ctypes.get_errno()}'",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("sysv_shared_memory", "import ctypes\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    seg = libc.shmget(0, 1 << 30, 0o1000 | 0o600)\n"
           "    assert seg >= 0, f'errno {ctypes.get_errno()}'",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("sysv_message_queue", "import ctypes\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    q = libc.msgget(0, 0o1000 | 0o600)\n    assert q >= 0, f'errno {ctypes.get_errno()}'",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("posix_message_queue", "import ctypes\n"
           "def f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
           "    q = libc.mq_open(b'/q', 0o100 | 2, 0o600, None)\n"
           "    assert q >= 0, f'errno {ctypes.get_errno()}'",
           ["f()"], {"ok"}, ["fail"], "errno 1", kind="memory"),
    Escape("fill_dev_shm", "def f():\n    for i in range(64):\n"
           "        open(f'/dev/shm/s{i}', 'wb').write(b'0' * 500000)",
           ["f()"], {"ok"}, ["fail"], "No space left", kind="memory"),
    # ---- writing outside the private scratch ----
    Escape("write_var_tmp", "def f():\n    open('/var/tmp/__TAG__', 'w').write('x')", ["f()"],
           {"ok"}, ["fail"], "Error", kind="disk"),
    Escape("write_run_lock", "def f():\n    open('/run/lock/__TAG__', 'w').write('x')", ["f()"],
           {"ok"}, ["fail"], "Error", kind="disk"),
    Escape("write_dev_shm_lands_in_private_tmpfs",
           "def f():\n    open('/dev/shm/__TAG__', 'w').write('x')", ["f()"],
           {"ok"}, ["pass"], kind="disk"),  # allowed, but the host's /dev/shm stays clean
    Escape("write_tmp_lands_in_private_tmpfs",
           "def f():\n    open('/tmp/__TAG__', 'w').write('x')", ["f()"],
           {"ok"}, ["pass"], kind="disk"),
    Escape("write_outside_workdir", "def f():\n    open('__TARGET__', 'w').write('pwned')",
           ["f()"], {"ok"}, ["fail"], "Error", kind="disk"),
    Escape("overwrite_host_sentinel", "def f():\n    open('__SENTINEL__', 'w').write('pwned')",
           ["f()"], {"ok"}, ["fail"], "Error", kind="disk"),
    Escape("no_writable_dir_but_scratch", WALK +
           "def f():\n    ok = []\n    for root, _ in visible():\n"
           "        try:\n            open(os.path.join(root, '.probe__TAG__'), 'w').close()\n"
           "            ok.append(root)\n        except OSError:\n            pass\n"
           "    return sorted(ok)",
           ["assert f() == ['/dev/shm', '/tmp', '/tmp/work'], f()"], {"ok"}, ["pass"],
           kind="disk"),
    Escape("only_a_minimal_root", "import os\ndef f():\n    return sorted(os.listdir('/'))",
           ["assert set(f()) <= {'bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'libx32', 'proc',"
            " 'root', 'sandbox', 'sbin', 'tmp', 'usr', 'home', 'opt'}, f()",
            "assert not {'var', 'run', 'mnt', 'srv', 'sys', 'work'} & set(f()), f()"],
           {"ok"}, ["pass", "pass"], kind="disk"),
    # ---- sockets and network ----
    Escape("network_connect",
           "import socket\ndef f():\n    socket.create_connection(('127.0.0.1', __PORT__), 2)",
           ["f()"], {"ok"}, ["fail"], "Network is unreachable", kind="sockets"),
    Escape("abstract_unix_socket", "import socket\ndef f():\n"
           "    s = socket.socket(socket.AF_UNIX)\n    s.connect('\\0__ABSTRACT__')",
           ["f()"], {"ok"}, ["fail"], "Connection refused", kind="sockets"),
    Escape("filesystem_unix_socket", "import socket\ndef f():\n"
           "    s = socket.socket(socket.AF_UNIX)\n    s.connect('__UNIX_SOCKET__')",
           ["f()"], {"ok"}, ["fail"], "FileNotFoundError", kind="sockets"),
    Escape("no_unix_socket_visible", WALK +
           "def f():\n    found = []\n    for _, files in visible():\n        for p in files:\n"
           "            try:\n                if stat.S_ISSOCK(os.lstat(p).st_mode):\n"
           "                    found.append(p)\n            except OSError:\n                pass\n"
           "    return found", ["assert f() == [], f()"], {"ok"}, ["pass"], kind="sockets"),
    Escape("vsock_to_the_vm_host", "import socket\ndef f():\n    socket.socket(40, 1)", ["f()"],
           {"ok"}, ["fail"], "Address family not supported", kind="sockets"),
    Escape("udp_out", "import socket\ndef f():\n"
           "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))",
           ["f()"], {"ok"}, ["fail"], "Network is unreachable", kind="sockets"),
    # ---- secrets ----
    Escape("read_env_secret", "import os\nprint(dict(os.environ))",
           ["assert os.environ['AWS_SECRET_ACCESS_KEY']"], {"ok"}, ["fail"], "KeyError",
           kind="secrets"),
    Escape("read_host_environ_via_proc",
           "def f():\n    print(open('/proc/__HOST_PID__/environ').read())", ["f()"],
           {"ok"}, ["fail"], "Error", kind="secrets"),
    Escape("scan_every_environ", "import os\ndef f():\n    leaks = []\n"
           "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
           "        for name in ('environ', 'cmdline'):\n            try:\n"
           "                text = open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')\n"
           "            except OSError:\n                continue\n"
           "            if 'AWS_' in text:\n                leaks.append(text)\n    return leaks",
           ["assert f() == []"], {"ok"}, ["pass"], kind="secrets"),
    Escape("read_home_and_root", "import os, sys\n"
           "def f():\n    python = os.path.realpath(sys.base_prefix)\n    found = []\n"
           "    for top in ('/root', '/home', '/run/secrets', '/var/run/secrets'):\n"
           "        for root, dirs, files in os.walk(top):\n"
           "            if root.startswith(python):\n                dirs[:] = []\n"
           "                continue\n"
           "            found += [os.path.join(root, n) for n in files]\n    return found",
           ["assert f() == [], f()"], {"ok"}, ["pass"], kind="secrets"),  # only the Python
    # ---- privileges and other processes ----
    Escape("become_root_again", "import os\ndef f():\n    os.setuid(0)", ["f()"],
           {"ok"}, ["fail"], "Error", kind="privileges"),
    Escape("kill_parent", "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)",
           ["f()", "assert True"], {"ok"}, ["fail", "pass"], "PermissionError",
           kind="privileges"),
    Escape("kill_host_process", "import os\ndef f():\n    os.kill(__HOST_PID__, 9)", ["f()"],
           {"ok"}, ["fail"], "Error", kind="privileges"),
    Escape("kill_everything", "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)",
           ["f()", "assert True"], {"ok"}, ["fail", "pass"], "PermissionError",
           kind="privileges"),
    Escape("kill_the_tester", "import os, signal\ndef f():\n    me, hit = os.getpid(), []\n"
           "    for pid in range(1, 64):\n        if pid == me:\n            continue\n"
           "        for target in (pid, -pid):\n            try:\n"
           "                os.kill(target, signal.SIGKILL)\n                hit.append(target)\n"
           "            except OSError:\n                pass\n    return hit",
           ["assert f() == []", "assert True"], {"ok"}, ["pass", "pass"], kind="forging"),
    Escape("trace_the_tester", "import ctypes, os\ndef f():\n"
           "    libc = ctypes.CDLL(None, use_errno=True)\n    hits = []\n"
           "    for pid in range(1, 64):\n        if pid == os.getpid():\n            continue\n"
           "        if libc.ptrace(16, pid, 0, 0) == 0:\n            hits.append(('ptrace', pid))\n"
           "        for name in ('mem', 'fd', 'environ'):\n            try:\n"
           "                os.listdir(f'/proc/{pid}/fd') if name == 'fd' else open(f'/proc/{pid}/{name}', 'rb').read(1)\n"
           "                hits.append((name, pid))\n            except OSError:\n                pass\n"
           "    return hits", ["assert f() == []"], {"ok"}, ["pass"], kind="forging"),
    Escape("kill_own_process_group", "import os\ndef f():\n    os.killpg(0, 9)",
           ["f()", "assert True"], {"crashed"}, ["crash", "not_run"], "SIGKILL",
           kind="processes"),
    Escape("daemon_outlives_run",
           "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)",
           ["assert True"], {"ok"}, ["pass"], kind="processes"),
    # ---- forging the verdict ----
    Escape("sys_exit_0_at_import", "import sys\nsys.exit(0)", ["assert True"],
           {"load_error"}, ["not_run"], "SystemExit", kind="forging"),
    Escape("os_exit_0_at_import", "import os\nos._exit(0)", ["assert True"],
           {"exited"}, ["not_run"], "exited with code 0", kind="forging"),
    Escape("os_exit_0_in_test", "import os\ndef f():\n    os._exit(0)", ["f()", "assert True"],
           {"exited"}, ["crash", "not_run"], "exited with code 0", kind="forging"),
    Escape("os_exit_special_codes", "import os\ndef f(code):\n    os._exit(code)",
           ["f(125)", "assert True"], {"exited"}, ["crash", "not_run"], "code 125",
           kind="forging"),
    Escape("exit_when_an_exception_is_expected", "import os\ndef f(x):\n    os._exit(0)",
           ["try:\n    f(-1)\nexcept BaseException:\n    pass\nelse:\n    assert False"],
           {"exited"}, ["crash"], "exited", kind="forging"),
    Escape("system_exit_in_test", "def f():\n    raise SystemExit(0)", ["f()"],
           {"ok"}, ["fail"], "SystemExit", kind="forging"),
    Escape("system_exit_in_atexit", "import atexit, sys\natexit.register(sys.exit, 0)\n"
           "def f():\n    return 1", ["assert f() == 2"], {"ok"}, ["fail"], "AssertionError",
           kind="forging"),
    Escape("forge_pass_by_printing",
           "import os\nprint('{\"e\": \"test\", \"i\": 0, \"status\": \"pass\"}')\n"
           "print('1 passed, 0 failed')\nos._exit(0)",
           ["assert False"], {"exited"}, ["not_run"], kind="forging"),
    Escape("forge_pass_on_every_fd",
           "import os\nfor fd in range(3, 1024):\n    try: os.write(fd, b'{\"e\": \"test\", \"i\": 0, "
           "\"status\": \"pass\"}\\n{\"e\": \"done\"}\\n')\n    except OSError: pass\n",
           ["assert False"], {"tampered", "exited"}, ["not_run"], kind="forging"),
    Escape("forge_reply_frames", "import os, json, struct\n"
           "def f():\n    msg = json.dumps({'r': True}).encode()\n"
           "    for _ in range(3):\n        os.write(3, struct.pack('>I', len(msg)) + msg)\n"
           "    return False",  # a forged reply is only a value, and the tests' values are unknown
           ["assert f() == 'a value the solution never sees'", "assert True"],
           {"ok"}, ["fail", "pass"], kind="forging"),
    Escape("close_every_fd", "import os\nos.closerange(0, 1024)\ndef f():\n    return 1",
           ["assert f() == 1"], {"tampered", "exited"}, ["not_run"], kind="forging"),
    Escape("forge_by_walking_frames", "import sys, gc\n"
           "def f():\n    found = [fr for o in gc.get_objects() if isinstance(o, dict) for fr in o"
           " if isinstance(fr, str) and ('report' in fr or 'record' in fr)]\n"
           "    frame = sys._getframe()\n    while frame is not None:\n"
           "        for key in ('report', 'record'):\n            if key in frame.f_locals:\n"
           "                frame.f_locals[key]({'e': 'test', 'i': 0, 'status': 'pass'})\n"
           "        frame = frame.f_back\n    return found",
           ["assert f() == 'impossible'"], {"ok"}, ["fail"], "AssertionError", kind="forging"),
    Escape("tests_are_not_in_the_solution_process", "import gc\n"
           "def f():\n    needle, hits = ''.join(['ass', 'ert f(', ') == []']), []\n"
           "    for o in gc.get_objects():\n"
           "        items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()\n"
           "        hits += [x[:60] for x in items if isinstance(x, str) and needle in x and x is not needle]\n"
           "    return hits", ["assert f() == []"], {"ok"}, ["pass"], kind="forging"),
    Escape("patch_harness_names", "import builtins, os, sys\n"
           "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
           "os.write = lambda fd, data: len(data)\nsys.stdout = None\n"
           "builtins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
           "def f():\n    return 1", ["assert f() == 2"], {"ok"}, ["fail"], "AssertionError",
           kind="forging"),
    Escape("patch_the_wire_format", "import json\n"
           "json.dumps = lambda *a, **k: '{\"e\": \"done\"}'\n"
           "def f():\n    return 1", ["assert f() == 2"], {"exited", "tampered"}, ["not_run"],
           kind="forging"),
    Escape("always_equal_result", "class E:\n    def __eq__(self, o): return True\n"
           "    def __ne__(self, o): return False\n    def __sub__(self, o): return 0\n"
           "    __rsub__ = __sub__\n    def __lt__(self, o): return True\n"
           "    def __contains__(self, o): return True\n    def __hash__(self): return 0\n"
           "def f():\n    return E()",
           ["assert f() == 3", "assert abs(f() - 3.5) < 1e-9", "assert f() < 3 < f()"],
           {"ok"}, ["fail", "fail", "fail"], kind="forging"),
    Escape("shadow_the_builtins_the_tests_use",
           "def abs(x):\n    return 0\ndef all(items):\n    return True\n"
           "def sorted(items):\n    return [1, 2, 3]\ndef isinstance(*a):\n    return True\n"
           "def f():\n    return 99",
           ["assert abs(f() - 3.5) < 1e-9", "assert all(v == 1 for v in [f()])",
            "assert sorted([f()]) == [1, 2, 3]", "assert isinstance(f(), str)",
            "from solution import abs as theirs\nassert theirs(-5) == 0"],
           {"ok"}, ["fail", "fail", "fail", "fail", "pass"], "AssertionError", kind="forging"),
    Escape("fake_stdlib_module_for_the_tests",
           "class math:\n    isclose = staticmethod(lambda *a, **k: True)\n"
           "json = type('J', (), {'loads': staticmethod(lambda s: {'ok': True})})()\n"
           "def f():\n    return 99",
           ["assert math.isclose(f(), 3.5)", "assert json.loads('{}') == {'ok': True}"],
           {"ok"}, ["fail", "fail"], "AssertionError", kind="forging"),
    Escape("suppress_failures_with_a_context_manager",
           "class C:\n    def __enter__(self): return self\n"
           "    def __exit__(self, *a): return True\n", ["with C():\n    assert False"],
           {"ok"}, ["fail"], "AssertionError", kind="forging"),
    Escape("swallow_a_failing_callback", "def apply(fn):\n    try:\n        fn()\n"
           "    except BaseException:\n        pass\n    return 1",
           ["def check():\n    assert False, 'must fail'\nassert apply(check) == 1"],
           {"ok"}, ["fail"], "must fail", kind="forging"),
    Escape("code_in_the_result_is_not_run_by_the_tester",
           "def f():\n    return \"__import__('os').write(9, b'forged') or 1 + 0\"",
           ["assert eval(f()) == 1"], {"ok"}, ["fail"], "does not compile", kind="forging"),
    Escape("signal_self_in_test", "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGSEGV)",
           ["f()", "assert True"], {"crashed"}, ["crash", "not_run"], "SIGSEGV", kind="forging"),
    Escape("break_the_setup_on_purpose", "import os\n"
           "for i in range(64):\n    try:\n        open(f'/tmp/work/fill{i}', 'wb').write(b'0' * 1000000)\n"
           "    except OSError:\n        break\n",
           ["assert True"], {"setup_error"}, ["not_run"], "No space left", kind="forging",
           extra={"setup": "open('expected.txt', 'w').write('x' * 100000)",
                  "blame": "solution"}),
]  # fmt: skip


class Limits:
    """The subset of CodeVerifierConfig the sandbox reads (no prefgen.config import needed)."""

    def __init__(self, **values):
        self.__dict__.update(LIMITS, **values)


def _sandbox_processes(mechanisms: dict) -> list[str]:
    """Processes of this run still alive: its two fresh uids (root mode), or, with one shared
    uid (user-namespace mode), the solution server's program."""
    uids = {int(n) for n in re.findall(r"uid (\d+)", mechanisms.get("user", ""))}
    if mechanisms.get("mode") != "root":
        uids = set()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = int(next(x for x in f if x.startswith("Uid:")).split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, StopIteration):
            continue
        if uid in uids or (uid == os.getuid() and "/sandbox/serve.py" in cmdline):
            found.append(f"{pid} uid {uid}: {cmdline}")
    return found


def run_case(case: Escape, cfg=None) -> dict:
    """Run one case with its host-side fixtures; return the result and the host checks."""
    from prefgen.sandbox.runner import TestCase, run_tests

    cfg = cfg or Limits(**case.extra.get("limits", {}))
    work = tempfile.mkdtemp(prefix="escape-")
    tag = f"pgsbx-{os.getpid()}-{case.name}"
    sentinel = os.path.join(work, "sentinel.txt")
    with open(sentinel, "w") as f:
        f.write(SENTINEL_TEXT)
    os.chmod(sentinel, 0o666)  # writable by anyone: only the sandbox keeps the run out
    outside = os.path.join(work, "outside")
    os.mkdir(outside)
    os.chmod(outside, 0o777)
    os.chmod(work, 0o755)
    listeners = {
        "tcp": socket.create_server(("127.0.0.1", 0)),
        "abstract": socket.socket(socket.AF_UNIX),
        "unix": socket.socket(socket.AF_UNIX),
    }
    listeners["abstract"].bind("\0" + tag)
    unix_path = os.path.join(work, "raylet.sock")
    listeners["unix"].bind(unix_path)
    os.chmod(unix_path, 0o777)
    for s in listeners.values():
        s.listen()
        s.settimeout(0)
    tokens = {
        "__PORT__": str(listeners["tcp"].getsockname()[1]),
        "__ABSTRACT__": tag,
        "__UNIX_SOCKET__": unix_path,
        "__TARGET__": os.path.join(outside, "pwned.txt"),
        "__SENTINEL__": sentinel,
        "__HOST_PID__": str(os.getpid()),
        "__TAG__": tag,
    }
    code = case.solution
    for token, value in tokens.items():
        code = code.replace(token, value)
    tests = [TestCase(t[:40], t.replace("__TAG__", tag)) for t in case.tests]
    try:
        result = run_tests(code, case.extra.get("setup", ""), tests, cfg)
        accepted = []
        for name, s in listeners.items():
            try:
                s.accept()
                accepted.append(name)
            except BlockingIOError:
                pass
    finally:
        for s in listeners.values():
            s.close()
    with open(sentinel) as f:
        sentinel_ok = f.read() == SENTINEL_TEXT
    target_exists = os.path.lexists(tokens["__TARGET__"])
    shutil.rmtree(work, ignore_errors=True)
    leftovers = [
        p
        for d in HOST_DIRS
        for p in (os.path.join(d, tag), os.path.join(d, ".probe" + tag))
        if os.path.lexists(p)
    ]
    spawn_ok = subprocess.run(["true"], timeout=30).returncode == 0
    return {
        "status": result.status,
        "outcomes": [t.status for t in result.tests],
        "details": [t.detail for t in result.tests],
        "detail": result.detail,
        "blame": result.blame,
        "passed": result.passed,
        "output": result.output,
        "mechanisms": result.mechanisms,
        "accepted": accepted,
        "sentinel_ok": sentinel_ok,
        "target_exists": target_exists,
        "leftovers": leftovers,
        "spawn_ok": spawn_ok,
        "survivors": _sandbox_processes(result.mechanisms),
    }


def failures(case: Escape, got: dict) -> list[str]:
    """What is wrong with a case's result (empty: contained and reported as expected)."""
    problems = []
    if got["status"] not in case.status:
        problems.append(f"status {got['status']!r} not in {sorted(case.status)}")
    expected = case.outcomes
    if case.extra.get("max_passed") is not None:
        if got["passed"] > case.extra["max_passed"]:
            problems.append(f"{got['passed']} passes")
    elif got["outcomes"] != expected:
        problems.append(f"outcomes {got['outcomes']} != {expected}")
    detail = (got["details"][0] if got["details"] else "") or got["detail"]
    if case.detail not in detail:
        problems.append(f"{case.detail!r} not in detail {detail!r}")
    if case.extra.get("max_passed") is None and got["passed"] != expected.count("pass"):
        problems.append(f"passed {got['passed']} != {expected.count('pass')}")
    if case.extra.get("blame") and got["blame"] != case.extra["blame"]:
        problems.append(f"blame {got['blame']!r}")
    for name in ("accepted", "leftovers", "survivors"):
        if got[name]:
            problems.append(f"host: {name} {got[name]}")
    if not got["sentinel_ok"] or got["target_exists"] or not got["spawn_ok"]:
        problems.append("host: sentinel/target/spawn check failed")
    if SECRET in got["output"] or any(SECRET in d for d in got["details"]):
        problems.append("host: the secret leaked")
    return problems
