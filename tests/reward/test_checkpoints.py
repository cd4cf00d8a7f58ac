"""The checkpoint store: a checkpoint counts once the pointer names it; old ones are pruned."""

from __future__ import annotations

import pytest

from prefgen.reward.checkpoints import LATEST, CheckpointStore


def _writer(text: str):
    def write(directory):
        (directory / "model").mkdir()
        (directory / "model" / "weights.txt").write_text(text)
        (directory / "state.pt").write_text(f"state {text}")

    return write


def test_save_commits_by_pointer_and_keeps_the_newest(tmp_path):
    store = CheckpointStore(str(tmp_path / "train"), keep=2)
    assert store.latest() is None
    for step in (2, 4, 6):
        store.save(step, _writer(f"w{step}"), {"step": step, "loss": 1.0 / step})
    latest = store.latest()
    assert latest == {
        "name": "checkpoint_0000006",
        "step": 6,
        "metrics": {"step": 6, "loss": 1 / 6},
    }
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "checkpoint_0000004",
        "checkpoint_0000006",
        LATEST,
    ]
    with store.local(latest["name"]) as directory:
        assert (directory / "model" / "weights.txt").read_text() == "w6"


def test_a_save_that_fails_midway_leaves_the_last_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path / "train"), keep=2)
    store.save(2, _writer("w2"), {"step": 2})

    def broken(directory):
        _writer("w4")(directory)
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.save(4, broken, {"step": 4})
    assert store.latest()["name"] == "checkpoint_0000002"
    store.clear()
    assert store.latest() is None


def test_prune_keeps_the_newest_up_to_the_pointer_and_only_checkpoints(tmp_path):
    root = tmp_path / "train"
    store = CheckpointStore(str(root), keep=2)
    store.save(2, _writer("w2"), {"step": 2})
    # a run killed after uploading step 9 but before its commit, and a file of another tool
    (root / "checkpoint_0000009").mkdir()
    (root / "checkpoint_manager_snapshot.json").write_text("{}")
    store.save(4, _writer("w4"), {"step": 4})
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint_0000002",
        "checkpoint_0000004",
        "checkpoint_manager_snapshot.json",
        LATEST,
    ]
