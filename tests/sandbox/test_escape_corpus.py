"""Adversarial corpus in this process's own mode (root on the development machine): each escape
attempt is contained, reported with its status, and the host is checked afterwards.

Run: .venv/bin/python -m pytest tests/sandbox -q

The cases live in escapes.py (so test_nonroot.py can run them again as an unprivileged user).
There is no "skip if the host lacks isolation" any more: a host that cannot isolate gets no run
at all (`test_nonroot.py::test_refused_without_namespaces`).
"""

from __future__ import annotations

import os

import pytest
from sandbox.escapes import CORPUS, SECRET, Limits, failures, run_case

from prefgen.sandbox.runner import TestCase, run_tests


@pytest.fixture(scope="module")
def probe():
    """The isolation this machine gives, from a harmless run."""
    result = run_tests("", "", [TestCase("t", "assert True")], Limits())
    assert result.status == "ok", result
    return result.mechanisms


def test_every_layer_is_on(probe):
    assert probe["mode"] == ("root" if os.geteuid() == 0 else "user namespace")
    for layer in ("pid", "network", "ipc", "filesystem"):
        assert probe[layer].startswith("isolated"), (layer, probe[layer])
    assert "writable: /tmp 8 MB, /dev/shm 8 MB" in probe["filesystem"]
    assert "no capabilities" in probe["user"]
    assert probe["seccomp"].startswith("filter")
    assert probe["verdict"].startswith("tester process")


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_escape_is_contained(case, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # what a Ray worker's environment holds
    got = run_case(case)
    assert failures(case, got) == [], got
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET


def test_stack_walking_forger_gets_nothing():
    """The old design's documented gap: code that walked the harness's frames to its reporting
    closure could forge every record. The solution process holds no such closure now."""
    forger = (
        "import gc, os, sys\n"
        "for obj in gc.get_objects():\n"
        "    if callable(obj) and getattr(obj, '__name__', '') in ('report', 'record'):\n"
        "        obj({'e': 'test', 'i': 0, 'status': 'pass'})\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    for key in ('report', 'record'):\n"
        "        if key in frame.f_locals:\n"
        "            frame.f_locals[key]({'e': 'test', 'i': 0, 'status': 'pass'})\n"
        "    frame = frame.f_back\n"
    )
    tests = [TestCase("a", "assert False"), TestCase("b", "assert False")]
    result = run_tests(forger, "", tests, Limits())
    assert result.status == "ok" and result.passed == 0, result
    assert [t.status for t in result.tests] == ["fail", "fail"]
