"""Per-run cgroups on the host, when it runs as root and the hierarchy is writable.

One cgroup for the solution's processes and one for the tester's, each with a memory limit
(swap included) and a process limit. A cgroup counts what RLIMIT_AS cannot: tmpfs and shared
memory pages, pipe and socket buffers, and every process of the tree together. cgroup v2 and the
v1 memory + pids controllers are supported; anything else (or any error) means no cgroup, which
the run reports: the rlimit and seccomp layers still hold without it.
"""

from __future__ import annotations

import os
import signal
import time

ROOT_MODE = os.geteuid() == 0


class RunCgroups:
    """The cgroups of one run: role -> directories (one per hierarchy)."""

    def __init__(self, version: str, dirs: dict[str, list[str]], memory_mb: int, pids: int):
        self.version, self.dirs = version, dirs
        self.memory_mb, self.pids = memory_mb, pids

    def procs_files(self) -> dict[str, list[str]]:
        """Where each role's processes write their pid to join (before they lose root)."""
        return {
            role: [os.path.join(d, "cgroup.procs") for d in ds] for role, ds in self.dirs.items()
        }

    def describe(self) -> str:
        return (
            f"cgroup {self.version}: {self.memory_mb} MB (no swap) and {self.pids} processes "
            "each for the solution's and the tester's process trees"
        )

    def oom_kills(self, role: str) -> int:
        """How many processes of `role` the kernel's OOM killer took in this cgroup."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        for d in self.dirs.get(role, []):
            try:
                with open(os.path.join(d, name)) as f:
                    for line in f:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
            except (OSError, ValueError):
                continue
        return 0

    def remove(self) -> None:
        """Kill anything left (nothing should be: the PID namespace is gone) and remove the dirs."""
        for ds in self.dirs.values():
            for d in ds:
                _remove(d)


def _remove(path: str) -> None:
    for _ in range(50):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)  # busy: processes still exiting


def _mounts() -> list[tuple[str, str, str, str]]:
    """(fstype, root, mount point, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if tail and tail[0] in ("cgroup", "cgroup2"):
                out.append((tail[0], fields[3], fields[4], tail[2] if len(tail) > 2 else ""))
    return out


def _own_paths() -> dict[str, str]:
    """controller ('' for v2) -> this process's cgroup path."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


def _dir_for(root: str, point: str, path: str) -> str | None:
    if not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    return os.path.join(point, path[len(root) :].lstrip("/"))


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def create(run_id: str, memory_mb: int, pids: int) -> tuple[RunCgroups | None, str]:
    """The run's cgroups, or (None, why not)."""
    if not ROOT_MODE:
        return None, "not root"
    try:
        own, mounts = _own_paths(), _mounts()
    except OSError as exc:
        return None, f"cannot read cgroups ({exc.strerror})"
    made: list[str] = []
    try:
        v1 = {}
        for fstype, root, point, options in mounts:
            for controller in ("memory", "pids"):
                if fstype == "cgroup" and controller in options.split(",") and controller in own:
                    v1[controller] = _dir_for(root, point, own[controller])
        if v1.get("memory") and v1.get("pids"):
            dirs = {role: [] for role in ("solution", "tester")}
            for role in dirs:
                for controller in ("memory", "pids"):
                    d = os.path.join(v1[controller], f"prefgen-{run_id}-{role}")
                    os.mkdir(d)
                    made.append(d)
                    dirs[role].append(d)
                mem, pid_dir = dirs[role]
                limit = str(memory_mb << 20)
                _write(os.path.join(mem, "memory.limit_in_bytes"), limit)
                if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), limit)
                _write(os.path.join(pid_dir, "pids.max"), str(pids))
            return RunCgroups("v1", dirs, memory_mb, pids), ""
        v2 = [(root, point) for fstype, root, point, _ in mounts if fstype == "cgroup2"]
        if v2 and "" in own:
            base = _dir_for(v2[0][0], v2[0][1], own[""])
            with open(os.path.join(base, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            if not {"memory", "pids"} <= set(enabled):
                return None, "cgroup v2 without the memory and pids controllers delegated here"
            dirs = {}
            for role in ("solution", "tester"):
                d = os.path.join(base, f"prefgen-{run_id}-{role}")
                os.mkdir(d)
                made.append(d)
                dirs[role] = [d]
                _write(os.path.join(d, "memory.max"), str(memory_mb << 20))
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(os.path.join(d, "memory.swap.max"), "0")
                _write(os.path.join(d, "pids.max"), str(pids))
            return RunCgroups("v2", dirs, memory_mb, pids), ""
        return None, "no writable memory and pids cgroup"
    except OSError as exc:
        for d in reversed(made):
            _remove(d)
        return None, f"cgroup setup failed ({exc.strerror or exc})"
