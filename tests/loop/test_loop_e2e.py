"""`prefgen loop pipelines/loop.yaml`, killed during round 2's training, then run again.

Two rounds on the bundled model: round 2 is routed by round 1's served reward model, only the
prompts it is unsure of are judged, and after the kill the second invocation resumes the
training from its checkpoint and finishes with every pair exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from prefgen.data.manifest import read_manifest, read_rows
from prefgen.judges.route import decide, reward_gap

pytestmark = pytest.mark.e2e

LOOP = ROOT / "pipelines" / "loop.yaml"


def _loop(out: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, like a user's shell
    return subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", "loop", str(LOOP), f"output={out}",
         f"serve.port={port}"],
        env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _ids(path: Path) -> set[str]:
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}


def test_two_rounds_killed_in_round_two_training_then_resumed(tmp_path):
    out, port = tmp_path / "loop", free_port()
    # a checkpoint is committed once the store's pointer names it
    snapshot = out / "rm" / "round-2" / "train" / "latest.json"
    proc = _loop(out, port, tmp_path / "first.log")
    deadline = time.monotonic() + 900
    while not snapshot.exists():
        assert proc.poll() is None, f"loop ended early:\n{(tmp_path / 'first.log').read_text()}"
        assert time.monotonic() < deadline, "round 2 training never checkpointed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "loop.json").read_text())
    assert "train" not in state["rounds"][1], "killed after round 2 training had finished"

    again = _loop(out, free_port(), tmp_path / "second.log")
    assert again.wait(timeout=900) == 0, (tmp_path / "second.log").read_text()
    second_log = (tmp_path / "second.log").read_text()
    assert "round 1: pipeline" not in second_log and "round 2: pipeline" not in second_log
    state = json.loads((out / "loop.json").read_text())
    first, second = state["rounds"]
    assert second["train"]["resumed_from_step"] >= 2  # from the checkpoint, not from scratch
    assert second["train"]["init_from"] == first["train"]["model"]  # continue_training

    # every pair exactly once: per round, each input prompt has its pairs or a no-pair reject
    for k, record in ((1, first), (2, second)):
        run_dir = str(out / f"round-{k}")
        manifest = read_manifest(run_dir)
        pairs = read_rows(run_dir, manifest, "pairs")
        rejects = read_rows(run_dir, manifest, "rejects")
        assert len({p["id"] for p in pairs}) == len(pairs) == record["run"]["pairs"]
        no_pair = {r["id"] for r in rejects if r["stage"] == "pair"}
        assert {p["prompt_id"] for p in pairs} | no_pair == _ids(
            ROOT / "pipelines" / "data" / f"loop_round{k}.jsonl"
        )
    # round 2 was routed by round 1's model, recorded with the pairs it scored
    manifest = read_manifest(str(out / "round-2"))
    route = manifest["config"]["route"]
    assert route["kind"] == "reward_model" and route["model_version"] == second["run"]["routed_by"]
    assert first["run"]["routed_by"] is None and first["run"]["judged_prompts"] == 8
    assert second["run"]["judged_prompts"] + second["run"]["settled_by_reward_model"] == 8
    assert second["run"]["settled_by_reward_model"] >= 3  # judge_share 0.5: judges saw a part
    pairs = read_rows(str(out / "round-2"), manifest, "pairs")
    assert {p["label_source"] for p in pairs} <= {"judge", "reward_model"}
    # the budget is spent per shard: the rewards in the responses table decide each prompt
    assert manifest["execution"]["shards"] == 1
    rewards: dict[str, list] = {}
    for r in read_rows(str(out / "round-2"), manifest, "responses"):
        rewards.setdefault(r["prompt_id"], []).append({"scores": dict(r["scores"])})
    ids = sorted(rewards)
    gaps = [reward_gap({"responses": rewards[i]}) for i in ids]
    routes = dict(zip(ids, decide(gaps, route["band"], route["judge_share"]), strict=True))
    settled = {i for i, r in routes.items() if r == "reward_model"}
    assert len(settled) == second["run"]["settled_by_reward_model"]
    assert all((p["label_source"] == "reward_model") == (p["prompt_id"] in settled) for p in pairs)
    assert all(p["rm_margin"] is not None for p in pairs)  # both scored wherever judges labelled
    # each round sent a stratified sample of its judged pairs (only those) out for people
    assert first["audit"]["items"] >= 1 and first["audit"]["of_pairs"] == first["run"]["pairs"]
    items = json.loads(Path(second["audit"]["file"]).read_text())
    judged = {p["id"] for p in pairs if p["label_source"] == "judge"}
    assert second["audit"]["of_pairs"] == len(judged) and len(items) == second["audit"]["items"]
    assert {t["data"]["prefgen"]["pair_id"] for t in items} <= judged and (items or not judged)
    # the reward models learned and the report plots each round
    assert all(r["train"]["eval_accuracy"] is not None for r in state["rounds"])
    assert second["train"]["n_train"] > first["train"]["n_train"]
    page = Path(state["report"]).read_text()
    assert page.count("data:image/png;base64,") == 1 and "round 2" in page
