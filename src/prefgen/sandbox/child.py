"""The sandbox's child side: runner, init and harness (see `prefgen.sandbox.runner` for the design).

Started by `prefgen.sandbox.runner.run_tests` as `python -I -S sandbox_child.py`, so it imports the
standard library only (no site-packages, not even prefgen). Reads its job as JSON on stdin; writes
the runner's and init's trusted records as JSON lines on stdout and the harness's nonce-tagged
per-test records to the result pipe. Three processes, because PID 1 of a PID namespace cannot be
the process that unshared it, and because the harness should not be PID 1 (which ignores its own
default-action signals and must reap orphans):

    runner (root, host PID namespace)  unshare PID/net/IPC, pick a uid, fork; kill init at wall_s
      init (root, PID 1)               unshare mounts, hide dirs, fresh /proc, fork; report exit
        harness (fresh uid)            work dir, rlimits, drop root; load solution; run tests
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import secrets
import select
import signal
import sys
import types

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
HIDDEN_DIRS = ("/root", "/home", "/run/secrets", "/var/run/secrets")
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
UID_RANGE = (1_000_000, 1 << 20)  # start, span: a fresh uid per run, owned by nobody else
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
DETAIL_CHARS = 300


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(ctypes.CDLL(None, use_errno=True).unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data=None) -> None:
    args = [s.encode() if s is not None else None for s in (source, target, fstype)]
    libc = ctypes.CDLL(None, use_errno=True)
    data = data.encode() if data else None
    _check(libc.mount(*args, ctypes.c_ulong(flags), data), f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0), f"prctl {option}")


def _pick_uid() -> int | None:
    """A fresh uid nobody else runs as (inside this user namespace's map); None if not root."""
    if os.geteuid() != 0:
        return None
    uid = UID_RANGE[0] + secrets.randbelow(UID_RANGE[1])
    with open("/proc/self/uid_map") as f:
        for line in f:
            inside, _, count = map(int, line.split())
            if inside <= uid < inside + count:
                return uid
    return 65534


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the run's uid (used only when there is no PID namespace)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # everything this uid may signal, except ourselves
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _runner_main() -> None:
    """Runner (outside the new PID namespace): unshare, fork init, kill it at the wall limit."""
    cfg = json.loads(sys.stdin.buffer.read())
    report: dict = {"mechanisms": {}}
    mech = report["mechanisms"]
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the host thread that started us
        for name, flag in (("pid", CLONE_NEWPID), ("network", CLONE_NEWNET), ("ipc", CLONE_NEWIPC)):
            try:
                _unshare(flag)
                mech[name] = "isolated (namespace)"
            except OSError as exc:
                mech[name] = f"NOT isolated ({exc.strerror})"
        cfg["uid"] = _pick_uid()
        cfg["pid_namespace"] = mech["pid"].startswith("isolated")
        alive_r, alive_w = os.pipe()
        init = os.fork()
        if init == 0:
            os.close(alive_w)
            _init_main(cfg, alive_r)
        os.close(alive_r)
        os.close(cfg["result_fd"])
        timed_out = []

        def on_alarm(*_):
            timed_out.append(True)
            try:
                os.kill(init, signal.SIGKILL)  # pid 1 of the namespace: takes every descendant
            except ProcessLookupError:
                pass

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, cfg["wall_s"])
        os.waitpid(init, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        report["timed_out"] = bool(timed_out)
        if not cfg["pid_namespace"] and cfg["uid"] and cfg["uid"] >= UID_RANGE[0]:
            _kill_uid(cfg["uid"])  # no namespace took the descendants down: the run's uid does
    except Exception as exc:
        report["error"] = f"runner: {exc!r}"
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def _init_main(cfg: dict, alive_r: int) -> None:
    """Init (pid 1 of the new PID namespace, still root): private filesystem, then the harness."""
    status: dict = {}
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:  # EOF: the runner died before the prctl
            os._exit(1)
        os.close(alive_r)
        os.umask(0o022)
        mech = {"filesystem": _isolate_filesystem(cfg)}
        harness = os.fork()
        if harness == 0:
            _harness_main(cfg, mech)
        os.close(cfg["result_fd"])
        while True:  # as pid 1 we also reap orphans; stop when the harness itself exits
            pid, wait, usage = os.wait4(-1, 0)
            if pid == harness:
                break
        status = {"harness_status": wait, "cpu_s": usage.ru_utime + usage.ru_stime}
    except BaseException as exc:
        status = {"error": f"init: {exc!r}"}
    finally:
        os.write(1, (json.dumps(status) + "\n").encode())
        os._exit(0)


def _isolate_filesystem(cfg: dict) -> str:
    """Private mount namespace: tmpfs over secrets and temp dirs; Python re-bound read-only."""
    try:
        _unshare(CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    except OSError as exc:
        return f"NOT isolated ({exc.strerror})"
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix)}
    keep = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in prefixes}  # before hiding them
    hidden = []
    for d in HIDDEN_DIRS + TMP_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            size, mode = (cfg["workdir_mb"], "1777") if d in TMP_DIRS else (1, "755")
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode={mode}")
            hidden.append(d)
    for path, fd in keep.items():
        if any(path == d or path.startswith(d + "/") for d in hidden):
            os.makedirs(path, 0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(fd)
    if cfg["pid_namespace"]:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # only our processes
    return "isolated (mount namespace; tmpfs over " + " ".join(hidden) + ")"


def _harness_main(cfg: dict, mech: dict) -> None:
    """Harness: lock itself down, load the solution, run the tests. Never returns."""
    try:
        fd = 64 + secrets.randbelow(900)
        while fd == cfg["result_fd"] or _is_open(fd):
            fd = 64 + secrets.randbelow(900)
        os.dup2(cfg["result_fd"], fd, inheritable=False)
        os.close(cfg["result_fd"])
        report = _reporter(fd, cfg.pop("nonce"), os.getpid())
        try:
            mech.update(_lock_down(cfg))
        except Exception as exc:
            report({"e": "sandbox", "mechanisms": mech, "error": f"harness: {exc!r}"})
            return
        report({"e": "sandbox", "mechanisms": mech})
        _run(cfg.pop("solution"), cfg.pop("setup"), cfg.pop("tests"), report)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(0)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _lock_down(cfg: dict) -> dict:
    """Work dir, stdio, rlimits, then drop root for a fresh uid. Fails closed as root."""
    uid = cfg["uid"]
    os.makedirs(cfg["workdir"], 0o700, exist_ok=True)
    if uid is not None:
        os.chown(cfg["workdir"], uid, uid)
    os.chdir(cfg["workdir"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stdout joins stderr (the host's capture file); the control pipe stays in init
    mb = 1 << 20
    for limit, value in (
        (resource.RLIMIT_AS, int(cfg["memory_mb"] * mb)),
        (resource.RLIMIT_FSIZE, int(cfg["max_file_mb"] * mb)),
        (resource.RLIMIT_NPROC, int(cfg["max_processes"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(limit, (value, value))
    cpu_s = max(1, int(cfg["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # soft: SIGXCPU; hard: SIGKILL
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise RuntimeError("could not drop root")
        user = f"uid {uid} (dropped from root)"
    elif os.geteuid() == 0:
        raise RuntimeError("refusing to run untrusted code as root")
    else:
        user = f"uid {os.getuid()} (not root: no drop; RLIMIT_NPROC counts all its processes)"
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount) grant nothing
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # setuid cleared it; die with init
    os.environ.clear()
    os.environ.update(CHILD_ENV, HOME=cfg["workdir"], TMPDIR="/tmp")
    return {"user": user}


def _reporter(fd: int, nonce: str, pid: int):
    """Write one record; bound before the solution loads, so patching os/json later is moot."""
    write, dumps, getpid, exit_now = os.write, json.dumps, os.getpid, os._exit

    def report(record: dict) -> None:
        if getpid() != pid:
            exit_now(1)  # a forked child of the solution fell through into the harness
        write(fd, (nonce + " " + dumps(record) + "\n").encode())  # < PIPE_BUF: atomic

    return report


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:DETAIL_CHARS]


def _run(solution: str, setup: str, tests: list[str], report) -> None:
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module  # test code may `from solution import f`
    try:
        exec(compile(solution, "solution.py", "exec"), module.__dict__)
    except BaseException as exc:  # SystemExit too: exiting before the tests is a load failure
        report({"e": "load_error", "detail": "solution failed to load: " + _describe(exc)})
        return
    namespace = dict(module.__dict__, __name__="tests")
    try:
        exec(compile(setup, "tests.py", "exec"), namespace)
    except BaseException as exc:
        solution_missing = isinstance(exc, ImportError) and exc.name == "solution"
        blame = "solution" if solution_missing else "tests"
        report({"e": "setup_error", "detail": "test setup: " + _describe(exc), "blame": blame})
        return
    report({"e": "loaded"})
    for i, code in enumerate(tests):
        status, detail = "pass", ""
        try:
            exec(compile(code, f"test_{i}", "exec"), namespace)
        except MemoryError:
            status, detail = "crash", "MemoryError (memory limit)"
        except OSError as exc:
            status = "crash" if exc.errno == errno.EFBIG else "fail"
            detail = ("file size limit: " if status == "crash" else "") + _describe(exc)
        except BaseException as exc:
            status, detail = "fail", _describe(exc)
        report({"e": "test", "i": i, "status": status, "detail": detail})
    report({"e": "done"})


if __name__ == "__main__":
    _runner_main()
