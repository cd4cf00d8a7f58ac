"""Start or join Ray: the one place prefgen calls `ray.init` (run, train-rm, serve).

An address configured (the config's `ray.address`, else $RAY_ADDRESS) is joined. Without one,
prefgen starts a fresh local Ray of its own (`ray.init(address="local")`). A plain `ray.init()`
would instead join whatever cluster `ray start` last recorded in the Ray temp dir
(`/tmp/ray/ray_current_cluster`): a live one refuses the local `num_cpus` ("must not be
provided"), and a stale one, left by a head that was killed, makes `ray.init` wait minutes for a
GCS that is gone. To join the machine's `ray start` cluster, say so: `ray.address=auto` (or
RAY_ADDRESS=auto).

It lives on the ground floor because it needs nothing of prefgen: every floor that runs Ray
work (reward, run, serve) calls it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ADDRESS_ENV = "RAY_ADDRESS"
CGROUP = "/sys/fs/cgroup"


def usable_cpus(cgroup: str = CGROUP) -> float:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a pod's
    `limits.cpu`), as a local Ray counts them. `os.cpu_count()` is the host's, often far more."""
    cpus = float(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    quota = _cgroup_quota(cgroup)
    return min(cpus, max(quota, 1.0)) if quota else cpus


def _cgroup_quota(root: str) -> float | None:
    """cgroup v2 `cpu.max` ("200000 100000" -> 2.0; "max ..." -> None), else v1's cfs files."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RayCluster:
    """The Ray this process runs on, for the run summary and the manifest."""

    address: str | None  # what was joined; None: a local Ray
    started_here: bool  # started by this call (or an earlier one in this process)
    cpus: float
    gpus: float

    @property
    def local(self) -> bool:
        return self.address is None

    def describe(self) -> str:
        size = f"{_count(self.cpus)} CPUs" + (f", {_count(self.gpus)} GPUs" if self.gpus else "")
        if self.address is None:
            how = "started by prefgen" if self.started_here else "already running in-process"
            return f"local ({how}, {size})"
        return f"{self.address} (joined, {size})"


_started: tuple[str, RayCluster] | None = None  # (GCS address, cluster) of the Ray started here


def configured_address(address: str | None = None) -> str | None:
    """The cluster to join: `address`, else $RAY_ADDRESS; None (or empty): a local Ray."""
    return address or os.environ.get(ADDRESS_ENV) or None


def connect(address: str | None = None, num_cpus: int | None = None) -> RayCluster:
    """Join `address` (else $RAY_ADDRESS), or start a local Ray with `num_cpus` (None: all).

    A Ray already initialized in this process is kept as it is (tests, notebooks, a second call
    in the same run).
    """
    global _started
    import ray

    target = configured_address(address)
    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
        if _started is not None and _started[0] == gcs:
            return _started[1]
        return _describe(ray, target, started_here=False)
    if target is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
        cluster = _describe(ray, None, started_here=True)
        _started = (ray.get_runtime_context().gcs_address, cluster)
        return cluster
    ray.init(address=target, log_to_driver=True)
    if target == "auto":  # name the cluster Ray found
        target = f"auto: {ray.get_runtime_context().gcs_address}"
    return _describe(ray, target, started_here=False)


def _describe(ray, address: str | None, started_here: bool) -> RayCluster:
    resources = ray.cluster_resources()
    return RayCluster(
        address=address,
        started_here=started_here,
        cpus=float(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0)),
    )


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"
