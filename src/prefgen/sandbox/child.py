"""The sandbox's child side: runner and init, which start the tester and the solution process.

Started by `prefgen.sandbox.runner.run_tests` as `python -I -S child.py`, so it imports the
standard library and its sibling modules only (not prefgen: nothing from site-packages). Reads its
job as JSON on stdin; writes the runner's and init's records as JSON lines on stdout (the control
pipe); the tester alone writes the verdict to the result pipe. Four processes:

    runner    host PID ns     enter PID/net/IPC/UTS namespaces (as root directly, else in a new
      |                       user namespace; neither: refuse), fork init, SIGKILL it at wall_s
      init    pid 1           private root (pivot_root), fresh /proc, socketpair; fork both below;
      |                       reap; tell the tester when the solution process exits; report
      tester                  own uid (root mode), no capabilities, non-dumpable, seccomp, rlimits;
      |                       runs the tests against proxies (harness.py), writes the verdict
      solution                own uid (root mode), no capabilities, seccomp, rlimits, cgroup;
                              exec'd fresh (serve.py): loads the solution, answers calls

Killing init takes the whole PID namespace with it, daemonised descendants included.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import sys
import time

if __package__:
    from . import harness, isolate
else:  # run as a script under -I -S: the siblings are importable from this file's directory
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import harness
    import isolate

    sys.path.pop(0)

HERE = os.path.dirname(os.path.abspath(__file__))
SOLUTION_FILES = (
    "serve.py",
    "rpc.py",
    "proxy.py",
    "values.py",
    "policy.py",
)  # what the solution process needs, copied into /sandbox
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
DETAIL_CHARS = 300
UID_RANGE = (1_000_000, 1 << 20)  # start, span: fresh uids per run, owned by nobody else
WORKDIR = "/tmp/work"
SOCKET_FD = 3
EXIT_GRACE_S = 0.5  # how long init waits for the solution process after the tester is done
WATCH_S = 0.1  # without a cgroup, how often init checks the solution's memory


# ---- runner ------------------------------------------------------------------------------------


def _runner_main() -> None:
    """Runner (host PID namespace): namespaces, fork init, kill it at the wall limit."""
    cfg = json.loads(sys.stdin.buffer.read())
    report: dict = {"mechanisms": {}}
    try:
        isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the host thread
        ns = isolate.enter_namespaces()
        # Same uid as the sandbox in user-ns mode: not traceable. Only now: a non-dumpable
        # process cannot write its own uid_map.
        isolate.prctl(isolate.PR_SET_DUMPABLE, 0)
        cfg["mode"], cfg["host_uid"], cfg["host_gid"] = ns["mode"], ns["uid"], os.getegid()
        report["mechanisms"].update(
            mode=ns["mode"],
            pid="isolated (namespace)",
            network="isolated (namespace, no interfaces up)",
            ipc="isolated (namespace)",
        )
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
    except isolate.IsolationError as exc:
        report["error"] = f"cannot isolate: {exc}"
    except Exception as exc:
        report["error"] = f"runner: {exc!r}"
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


# ---- init --------------------------------------------------------------------------------------


def _init_main(cfg: dict, alive_r: int) -> None:
    """Init (pid 1): private root, then the tester and the solution process. Never returns."""
    status: dict = {}
    try:
        isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:  # EOF: the runner died before the prctl
            os._exit(1)
        os.close(alive_r)
        isolate.prctl(isolate.PR_SET_DUMPABLE, 0)
        os.umask(0o022)
        cgroups = {role: [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in paths]
                   for role, paths in (cfg.get("cgroups") or {}).items()}  # fmt: skip
        files = {}
        for name in SOLUTION_FILES:
            with open(os.path.join(HERE, name)) as f:
                files[name] = f.read()
        exe = os.path.realpath(sys.executable)
        uids = _pick_uids(cfg)  # reads the uid map: before /proc is replaced
        try:
            fs = isolate.private_root(_python_dirs(exe), files, cfg["workdir_mb"], _shm_mb(cfg))
        except OSError as exc:
            raise isolate.IsolationError(f"private root: {exc}") from None
        mech = {"filesystem": fs, "nested namespaces": "refused by seccomp"}
        has_proc = "/proc: fresh" in fs
        if cfg["mode"] != "root" and has_proc:  # a second layer; as root it would be the host's
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
            mech["nested namespaces"] += "; max_user_namespaces=0 in the sandbox's user namespace"
        memory_kb = None
        if not cgroups:
            memory_kb = int(cfg["memory_mb"]) * 1024
            mech["memory"] = (
                f"no cgroup ({cfg.get('no_cgroup', 'none')}): RLIMIT_AS {cfg['memory_mb']} MB per "
                f"process, and init kills the largest of the solution's processes while together "
                f"they hold more than {cfg['memory_mb']} MB (checked every {WATCH_S} s)"
            )
            if not has_proc:
                memory_kb = None
                mech["memory"] = f"per process only: RLIMIT_AS {cfg['memory_mb']} MB (no /proc)"
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # for sigtimedwait in _reap
        tester_sock, solution_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        watch_r, watch_w = os.pipe()
        tester = os.fork()
        if tester == 0:
            solution_sock.close()
            os.close(watch_w)
            _tester_main(cfg, tester_sock, watch_r, cgroups.get("tester", []), uids, mech)
        os.close(cfg["result_fd"])
        os.close(watch_r)
        tester_sock.close()
        for fd in cgroups.pop("tester", []):
            os.close(fd)
        solution = os.fork()
        if solution == 0:
            os.close(watch_w)
            _solution_main(cfg, solution_sock, cgroups.get("solution", []), uids, tester, exe)
        solution_sock.close()
        for fd in cgroups.pop("solution", []):
            os.close(fd)
        status = _reap(tester, solution, watch_w, memory_kb)
        status["mechanisms"] = mech
    except isolate.IsolationError as exc:
        status = {"error": f"cannot isolate: {exc}"}
    except BaseException as exc:
        status = {"error": f"init: {exc!r}"}
    finally:
        os.write(1, (json.dumps(status) + "\n").encode())
        os._exit(0)  # as pid 1: the kernel kills whatever is left in the namespace


def _python_dirs(exe: str) -> list[str]:
    """The directories the interpreter needs, real paths, outermost only."""
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}  # no venv
    dirs.add(os.path.dirname(exe))
    return sorted(d for d in dirs if not any(d != o and d.startswith(o + "/") for o in dirs))


def _shm_mb(cfg: dict) -> int:
    return max(1, min(16, int(cfg["workdir_mb"])))


def _pick_uids(cfg: dict) -> dict:
    """Root mode: a fresh uid each for the tester and the solution, nobody else's. User-namespace
    mode: the one mapped uid for both (the seccomp filter and a non-dumpable tester keep the
    solution off the tester's processes)."""
    if cfg["mode"] != "root":
        uid, gid = cfg["host_uid"], cfg["host_gid"]
        return {"tester": None, "solution": None, "label": f"uid {uid}", "ids": (uid, gid)}
    mapped = []
    with open("/proc/self/uid_map") as f:
        for line in f:
            inside, _, count = map(int, line.split())
            mapped.append((inside, inside + count))
    start, span = UID_RANGE
    picked: list[int] = []
    for _ in range(1000):
        uid = start + secrets.randbelow(span)
        if uid not in picked and any(lo <= uid < hi for lo, hi in mapped):
            picked.append(uid)
        if len(picked) == 2:
            return {"tester": picked[0], "solution": picked[1], "label": "fresh uids"}
    raise isolate.IsolationError("no unused uid range in this user namespace's uid map")


def _reap(tester: int, solution: int, watch_w: int, memory_kb: int | None) -> dict:
    """Wait for the tester (reaping orphans on the way); tell it when the solution exits; after
    the tester, give the solution a moment, then kill it (a live solution then is noted).
    Without a cgroup (`memory_kb` set), watch the solution's processes' memory meanwhile."""
    out: dict = {}

    def note(role: str, wait: int, usage) -> None:
        out[f"{role}_status"] = wait
        out[f"{role}_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)

    while "tester_status" not in out:
        pid, wait, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:  # nothing exited: check memory, then sleep until SIGCHLD or the next check
            if memory_kb is not None and _kill_largest_if_over({1, tester}, memory_kb):
                out["memory_kills"] = out.get("memory_kills", 0) + 1
            signal.sigtimedwait([signal.SIGCHLD], WATCH_S if memory_kb is not None else 60)
        elif pid == solution:
            note("solution", wait, usage)
            try:
                os.write(watch_w, b"x")
            except OSError:
                pass  # the tester is already gone
        elif pid == tester:
            note("tester", wait, usage)
    if "solution_status" not in out:
        deadline = time.monotonic() + EXIT_GRACE_S
        while time.monotonic() < deadline:
            pid, wait, usage = os.wait4(solution, os.WNOHANG)
            if pid:
                note("solution", wait, usage)
                break
            time.sleep(0.01)
        else:
            os.kill(solution, signal.SIGKILL)
            _, wait, usage = os.wait4(solution, 0)
            note("solution", wait, usage)
            out["solution_killed"] = True
    return out


def _kill_largest_if_over(exclude: set[int], limit_kb: int) -> bool:
    """Like a cgroup's OOM killer, for hosts without one: if the namespace's processes (but
    init and the tester) hold more than `limit_kb` together (proportional set size, so pages a
    fork shares count once), SIGKILL the largest. RLIMIT_AS alone would allow one limit each."""
    sizes = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude:
            sizes[int(name)] = _pss_kb(name)
    if sum(sizes.values()) <= limit_kb:
        return False
    try:
        os.kill(max(sizes, key=sizes.get), signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _pss_kb(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:  # kernels before 4.14: resident pages
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _join_cgroups(fds: list[int]) -> None:
    for fd in fds:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)


def _keep_only(fds: set[int]) -> None:
    """Close every descriptor but `fds` (the solution must not inherit the result pipe)."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: close the whole range
        open_fds = range(3, 65536)
    for fd in open_fds:
        if fd not in fds:
            try:
                os.close(fd)
            except OSError:
                pass  # e.g. the listing's own descriptor, already gone


def _stdio() -> None:
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stdout joins stderr: the host's capture file


def _limits(cfg: dict, role: str) -> dict:
    mb = 1 << 20
    nproc = int(cfg["max_processes"])
    if cfg["mode"] != "root":
        nproc += 3  # the count is per user namespace: runner, init and the other process too
    return {
        "AS": int(cfg["memory_mb"] * mb),
        "FSIZE": int(cfg["max_file_mb"] * mb),
        "NPROC": nproc,
        "CORE": 0,
        "NOFILE": 256 if role == "tester" else 128,
        "MSGQUEUE": 0,
        "MEMLOCK": 0,
        "CPU": max(1, int(cfg["cpu_s"])),
    }


def _tester_main(cfg, sock, watch_r, cgroup_fds, uids, mech) -> None:
    """The tester: lock down, then run the tests (harness.run). Never returns."""
    result_fd = cfg["result_fd"]
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})  # init blocks it for itself
        os.setpgid(0, 0)
        _join_cgroups(cgroup_fds)
        _stdio()
        _keep_only({0, 1, 2, result_fd, sock.fileno(), watch_r})
        os.set_inheritable(result_fd, False)
        isolate.set_limits(_limits(cfg, "tester"))
        isolate.drop_privileges(uids["tester"], uids["tester"])
        isolate.prctl(isolate.PR_SET_DUMPABLE, 0)  # after the uid change, which may reset it
        isolate.prctl(isolate.PR_SET_NO_NEW_PRIVS, 1)
        isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
        count = isolate.install_seccomp([])
        os.chdir(WORKDIR)
        os.environ.clear()
        os.environ.update(CHILD_ENV, HOME=WORKDIR, TMPDIR="/tmp")
        user = uids["label"]
        if uids["tester"]:
            user = f"tester uid {uids['tester']}, solution uid {uids['solution']}"
        mech["user"] = f"{user}; no capabilities, no_new_privs (root dropped)"
        mech["seccomp"] = (
            f"filter ({count} instructions): no namespaces, mounts, memfd, SysV/POSIX IPC, "
            "ptrace, io_uring, AF_VSOCK, signals to the tester or init"
        )
        mech["verdict"] = "tester process: runs the tests, never the solution (calls over a socket)"
        harness.run(cfg, result_fd, sock, watch_r, mech)
    except BaseException as exc:
        try:
            line = json.dumps({"e": "error", "detail": f"tester: {exc!r}"[:DETAIL_CHARS]})
            os.write(result_fd, (line + "\n").encode())
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(0)


def _solution_main(cfg, sock, cgroup_fds, uids, tester_pid: int, exe: str) -> None:
    """The solution process up to exec: lock down, then a fresh interpreter runs serve.py."""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})  # init blocks it for itself
        os.setsid()  # its own session and group: killpg(0) reaches only its own processes
        _join_cgroups(cgroup_fds)  # first: their descriptors may sit where the socket goes
        fd = sock.detach()
        if fd != SOCKET_FD:
            os.dup2(fd, SOCKET_FD)
            os.close(fd)
        os.set_inheritable(SOCKET_FD, True)
        _stdio()
        _keep_only({0, 1, 2, SOCKET_FD})
        try:  # the kernel's OOM killer takes this process tree first
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        isolate.set_limits(_limits(cfg, "solution"))
        uid = uids["solution"]
        isolate.drop_privileges(uid, uid)
        isolate.prctl(isolate.PR_SET_NO_NEW_PRIVS, 1)
        isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
        isolate.install_seccomp([tester_pid])
        os.chdir(WORKDIR)
        env = dict(CHILD_ENV, HOME=WORKDIR, TMPDIR="/tmp")
        os.execve(exe, [exe, "-I", "-S", "/sandbox/serve.py"], env)
    except BaseException as exc:
        try:
            os.write(2, f"sandbox: the solution process could not start: {exc!r}\n".encode())
        except BaseException:
            pass
    os._exit(127)


if __name__ == "__main__":
    _runner_main()
