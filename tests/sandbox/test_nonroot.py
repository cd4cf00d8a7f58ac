"""The shipped image runs as a non-root user (cluster/Dockerfile: the Ray image's `ray`), so the
sandbox's user-namespace mode is the production mode. Here it runs for real: the whole escape
corpus again as an unprivileged user (nobody, via setpriv) under an interpreter that user can
run, with a secret in that user's environment; and a host without user namespaces, where the
sandbox must refuse to run anything (fail closed).

Skips only when privileges cannot be dropped (not root, or no setpriv) or no interpreter is
usable by an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sandbox.escapes import CORPUS, SECRET, failures

SRC = Path(__file__).resolve().parents[2] / "src" / "prefgen"
ESCAPES = Path(__file__).resolve().parent / "escapes.py"
NOBODY = 65534
RUN_CORPUS = (
    "import json, sys\n"
    "sys.path.insert(0, '.')\n"
    "from escapes import CORPUS, Limits, run_case\n"
    "from prefgen.sandbox.runner import TestCase, run_tests\n"
    "probe = run_tests('', '', [TestCase('t', 'assert True')], Limits())\n"
    "cases = {c.name: run_case(c) for c in CORPUS}\n"
    "print(json.dumps({'probe': [probe.status, probe.mechanisms], 'cases': cases}))\n"
)
# Runs as nobody: a user namespace where nobody is uid 1000 and no further user namespace may be
# made (max_user_namespaces=0), then a fresh interpreter (uid 1000, no capabilities) that asks
# the sandbox to run code which would leave a marker on the host if it ran at all.
NO_NAMESPACES = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "uid, gid = os.getuid(), os.getgid()\n"
    "assert libc.unshare(0x10000000) == 0, ctypes.get_errno()\n"
    "for name, text in (('setgroups', 'deny'), ('uid_map', f'1000 {uid} 1'),"
    " ('gid_map', f'1000 {gid} 1')):\n"
    "    open(f'/proc/self/{name}', 'w').write(text)\n"
    "open('/proc/sys/user/max_user_namespaces', 'w').write('0')\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
)
REFUSED_RUN = (
    "import json, sys\n"
    "sys.path.insert(0, '.')\n"
    "from escapes import Limits\n"
    "from prefgen.sandbox.runner import TestCase, run_tests\n"
    "marker = sys.argv[1]\n"
    'code = f\'open({marker!r}, "w").write("ran")\\ndef f():\\n    return 1\'\n'
    "r = run_tests(code, '', [TestCase('t', 'assert f() == 1')], Limits())\n"
    "print(json.dumps([r.status, r.detail, r.passed, [t.status for t in r.tests]]))\n"
)


def _as_nobody(setpriv: str, python: str, *args: str) -> list[str]:
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i",
            "PATH=/usr/bin:/bin", f"AWS_SECRET_ACCESS_KEY={SECRET}", python, *args]  # fmt: skip


def _usable_python(setpriv: str, cwd: str) -> str | None:
    """An interpreter (3.10+) that nobody can run: this one unless it lives in a private home."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/bin/python3.11"):
        if not os.path.exists(candidate):
            continue
        check = "import sys; assert sys.version_info >= (3, 10)"
        proc = subprocess.run(_as_nobody(setpriv, candidate, "-c", check), cwd=cwd,
                              capture_output=True, timeout=60)  # fmt: skip
        if proc.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def nobody():
    """(setpriv, python, dir): the sandbox package and the corpus copied where nobody reads them."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: test_escape_corpus.py runs in this mode")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv to drop privileges with")
    root = tempfile.mkdtemp(prefix="sandbox-nonroot-")  # not under pytest's private tmp dir
    try:
        shutil.copytree(SRC / "sandbox", Path(root, "prefgen", "sandbox"),
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copy(SRC / "__init__.py", Path(root, "prefgen", "__init__.py"))
        shutil.copy(ESCAPES, Path(root, "escapes.py"))
        for path in [Path(root), *Path(root).rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        python = _usable_python(setpriv, root)
        if python is None:
            pytest.skip("no Python an unprivileged user can run")
        yield setpriv, python, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def results(nobody):
    setpriv, python, root = nobody
    proc = subprocess.run(_as_nobody(setpriv, python, "-c", RUN_CORPUS), cwd=root,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_unprivileged_runs_in_a_user_namespace(results):
    status, mech = results["probe"]
    assert status == "ok", mech
    assert mech["mode"] == "user namespace"
    for layer in ("pid", "network", "ipc", "filesystem"):
        assert mech[layer].startswith("isolated"), (layer, mech[layer])
    assert "max_user_namespaces=0" in mech["nested namespaces"]
    assert f"uid {NOBODY}" in mech["user"] and "no capabilities" in mech["user"]
    assert mech["memory"].startswith("no cgroup (not root)")  # init watches the memory instead
    assert "kills the largest of the solution's processes" in mech["memory"]


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_contained_without_root(case, results):
    assert failures(case, results["cases"][case.name]) == [], results["cases"][case.name]


def test_refused_without_namespaces(nobody):
    """No user namespaces (as on hosts that disable them, or a seccomp profile that blocks them):
    nothing runs, and the result is a sandbox error that names the reason."""
    setpriv, python, root = nobody
    drop = tempfile.mkdtemp(prefix="refused-", dir=root)
    os.chmod(drop, 0o777)
    marker = os.path.join(drop, "ran")
    cmd = _as_nobody(setpriv, python, "-c", NO_NAMESPACES, REFUSED_RUN, marker)
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status, detail, passed, outcomes = json.loads(proc.stdout.splitlines()[-1])
    assert status == "sandbox_error" and passed == 0 and outcomes == ["not_run"]
    assert "cannot isolate" in detail and "namespaces" in detail, detail
    assert not os.path.exists(marker)  # the code never ran
