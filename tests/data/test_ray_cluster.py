"""Which Ray prefgen uses with and without an address, how the summary names it, and how many
CPUs a process without Ray may use."""

from __future__ import annotations

import os

import pytest

from prefgen.data.ray_cluster import RayCluster, configured_address, usable_cpus


@pytest.mark.parametrize(
    ("given", "env", "expected"),
    [
        (None, None, None),  # nothing configured: a local Ray of our own
        (None, "", None),  # an empty RAY_ADDRESS configures nothing
        (None, "ray://head:10001", "ray://head:10001"),
        ("10.0.0.1:6379", "ray://head:10001", "10.0.0.1:6379"),  # the config wins
        ("auto", None, "auto"),  # the machine's `ray start` cluster, on purpose
    ],
)
def test_configured_address(monkeypatch, given, env, expected):
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert configured_address(given) == expected


def test_describe_names_the_cluster_and_its_size():
    assert RayCluster(None, True, 2.0, 0.0).describe() == "local (started by prefgen, 2 CPUs)"
    assert (
        RayCluster(None, False, 1.5, 0.0).describe()
        == "local (already running in-process, 1.5 CPUs)"
    )
    assert (
        RayCluster("ray://head:10001", False, 64.0, 8.0).describe()
        == "ray://head:10001 (joined, 64 CPUs, 8 GPUs)"
    )
    assert RayCluster(None, True, 2.0, 0.0).local
    assert not RayCluster("auto: 10.0.0.1:6379", False, 4.0, 0.0).local


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a pod's limits.cpu: 1.5
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1
        ({}, None),  # no cgroup files: the affinity mask alone
    ],
)
def test_usable_cpus_follow_the_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mask = len(os.sched_getaffinity(0))
    assert usable_cpus(str(tmp_path)) == (mask if expected is None else min(mask, expected))
