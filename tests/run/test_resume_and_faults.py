"""Nothing lost, nothing duplicated: kills, injected faults and the error ceiling on real runs.

One uninterrupted streaming run is the reference. Against it:
* the driver of a phased run is SIGKILLed during generation, during judging and during
  writing; each time the same command resumes, and the final pairs equal the reference's,
  each exactly once (this also shows phased and streaming give the same pairs);
* a run whose engines crash their actor or raise on a share of batches, with one poisoned
  prompt, loses and duplicates nothing and rejects exactly the poisoned prompt;
* a run that passes its error ceiling stops cleanly and resumes to the reference output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROMPTS, QUICKSTART

from prefgen.data.manifest import read_manifest, read_rows
from prefgen.run.registry import load_pipeline

pytestmark = pytest.mark.e2e

LIMIT = 4
SMALL = [
    f"limit={LIMIT}",
    "generate.max_tokens=8",
    "generate.models.2.max_tokens=8",
    "execution.shard_rows=1",
    "execution.min_rows_for_error_rate=1",
    *[f"generate.models.{i}.batch_size=1" for i in range(3)],
    "judge.llm.0.model.batch_size=1",
    # one torch thread everywhere, so every run (one shared pool or several) samples alike
    *[f"generate.models.{i}.num_cpus=0.5" for i in range(3)],
    "judge.llm.0.model.num_cpus=0.5",
    *[f"generate.models.{i}.concurrency=1" for i in range(3)],
    "judge.llm.0.model.concurrency=1",
]
# A pool per model, so phased mode has a phase per generator and one for the judge.
SEPARATE = [*[f"generate.models.{i}.separate_pool=true" for i in range(3)],
            "judge.llm.0.model.separate_pool=true"]  # fmt: skip
PRIMARY_PROMPT = json.loads(PROMPTS.read_text().splitlines()[1])["prompt"]


def _tables(out: str) -> dict[str, list[dict]]:
    manifest = read_manifest(out)
    assert manifest is not None, f"{out}: no manifest"
    return {t: read_rows(out, manifest, t) for t in ("pairs", "responses", "rejects")}


def _response_key(r: dict) -> tuple:
    return (r["prompt_id"], r["model"], r["sample"])


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    from prefgen.run.pipeline import run

    out = tmp_path_factory.mktemp("reference") / "run"
    run(load_pipeline(QUICKSTART, [*SMALL, f"output.path={out}"]))
    return _tables(str(out))


def _same_output(got: dict, want: dict, skip_prompts: set[str] = frozenset()) -> None:
    ids = Counter(p["id"] for p in got["pairs"])
    assert all(n == 1 for n in ids.values()), f"duplicated pairs: {ids}"
    want_pairs = {p["id"]: p for p in want["pairs"] if p["prompt_id"] not in skip_prompts}
    got_pairs = {p["id"]: p for p in got["pairs"]}
    assert set(got_pairs) == set(want_pairs)
    for pid, p in got_pairs.items():
        assert p["chosen"] == want_pairs[pid]["chosen"]
        assert p["margin"] == pytest.approx(want_pairs[pid]["margin"], abs=1e-6)
    want_resp = {
        _response_key(r): r["text"] for r in want["responses"] if r["prompt_id"] not in skip_prompts
    }
    got_resp = Counter(_response_key(r) for r in got["responses"])
    assert all(n == 1 for n in got_resp.values()), "duplicated responses"
    assert {_response_key(r): r["text"] for r in got["responses"]} == want_resp


# ---------------------------------------------------------------- kill the driver


def _prefgen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, like a user's shell
    return subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _markers(out: Path, phase_glob: str) -> int:
    return len(list((out / "_work").glob(f"{phase_glob}/*.done")))


def _run_until(args: list[str], out: Path, condition, label: str) -> None:
    """Start `prefgen run`, SIGKILL its driver as soon as `condition(out)` holds."""
    proc = _prefgen(args)
    deadline = time.monotonic() + 300
    while not condition(out):
        assert proc.poll() is None, (
            f"run ended before the kill point ({label}):\n{proc.stdout.read()}"
        )
        assert time.monotonic() < deadline, f"kill point never reached ({label})"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: Ray's own processes die with it
    proc.wait()
    assert not (out / "manifest.json").exists(), f"run already finished at {label}"


def test_kill_driver_then_resume(reference, tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        str(QUICKSTART),
        *SMALL,
        f"output.path={out}",
        "execution.mode=phased",
        "ray.num_cpus=2",
        *SEPARATE,
    ]
    plan_rows = lambda o: len(json.loads((o / "_work/plan.json").read_text())["rows"])  # noqa: E731
    kill_points = [
        ("during generation", lambda o: _markers(o, "00-*") >= 1),
        # the last generator phase is complete: the judge's phase is loading or judging
        (
            "during judging",
            lambda o: _markers(o, "02-*") == plan_rows(o) and _markers(o, "final") == 0,
        ),
        ("during writing", lambda o: _markers(o, "final") >= 1),
    ]
    for label, condition in kill_points:
        _run_until(args, out, condition, label)
    status = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "status", str(out)], capture_output=True, text=True
    )
    assert status.returncode == 1 and "final" in status.stdout and "resume" in status.stdout
    proc = _prefgen(args)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log
    _same_output(_tables(str(out)), reference)
    manifest = read_manifest(str(out))
    assert [s["path"] for s in manifest["shards"]["pairs"]] == sorted(
        s["path"] for s in manifest["shards"]["pairs"]
    )
    assert manifest["counts"]["records_in"] == LIMIT


# ---------------------------------------------------------------- injected faults


def test_crashes_and_errors_lose_nothing(reference, ray_session, tmp_path):
    from prefgen.run.pipeline import run

    out = tmp_path / "run"
    chaos = "generate.models.0.engine_kwargs.chaos"
    overrides = [
        *SMALL,
        f"output.path={out}",
        f"{chaos}.crash_rate=0.35",
        f"{chaos}.raise_rate=0.35",
        f"{chaos}.state_dir={tmp_path / 'chaos'}",
        f"{chaos}.poison={PRIMARY_PROMPT[:30]}",
        "judge.llm.0.model.engine_kwargs.chaos.raise_rate=0.5",
        f"judge.llm.0.model.engine_kwargs.chaos.state_dir={tmp_path / 'chaos'}",
        "execution.min_rows_for_error_rate=100",  # one poisoned row of four is expected here
        "execution.max_restarts=10",
    ]
    run(load_pipeline(QUICKSTART, overrides))
    got = _tables(str(out))
    fired = list((tmp_path / "chaos").iterdir())
    assert fired, "no fault was injected: the test would prove nothing"
    poisoned = [r for r in got["rejects"] if r["stage"] == "generate"]
    assert len(poisoned) == 1 and poisoned[0]["reason"].startswith("error: ")
    assert "InjectedFault: poisoned prompt" in poisoned[0]["reason"]
    assert PRIMARY_PROMPT[:30] in poisoned[0]["raw"]
    _same_output(got, reference, skip_prompts={poisoned[0]["id"]})
    print(f"injected faults fired: {len(fired)}")


def test_error_ceiling_stops_cleanly_and_resumes(reference, ray_session, tmp_path):
    from prefgen.run.pipeline import run
    from prefgen.run.shards import ErrorCeiling

    out = tmp_path / "run"
    base = [*SMALL, f"output.path={out}", "execution.max_error_rate=0.25"]
    with pytest.raises(ErrorCeiling, match="max_error_rate"):
        run(load_pipeline(QUICKSTART, [*base, "generate.models.1.engine_kwargs.chaos.poison=What"]))
    assert read_manifest(str(out)) is None
    # the cause is gone (chaos is not part of the run's identity): the same run resumes
    run(load_pipeline(QUICKSTART, base))
    _same_output(_tables(str(out)), reference)
