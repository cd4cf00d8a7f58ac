"""Fixtures for the reward-model tests: topic pairs on disk, one trained model for the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from reward.topic_pairs import topic_pair_rows, write_pairs

ROOT = Path(__file__).resolve().parents[2]
TRAIN_OVERRIDES = [
    "max_length=48",
    "epochs=1",
    "batch_size=16",
    "lr=1e-4",
    "eval_fraction=0.2",
    "eval_every_steps=5",
    "checkpoint_every_steps=100",
]


@pytest.fixture(scope="session")
def topic_pairs_file(tmp_path_factory) -> Path:
    """200 topic pairs as one prefgen-schema Parquet file."""
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.parquet", topic_pair_rows())


@pytest.fixture(scope="session")
def trained(ray_session, topic_pairs_file, tmp_path_factory):
    """One real training run (one worker: in this process) on the topic pairs (MiniLM)."""
    import time

    from prefgen.reward.train import load_reward_config, train

    output = tmp_path_factory.mktemp("rm")
    args = [
        str(ROOT / "pipelines" / "reward.yaml"),
        f"data.path={topic_pairs_file}",
        f"output.path={output}",
        *TRAIN_OVERRIDES,
    ]
    cfg = load_reward_config(args[0], args[1:])
    started = time.time()
    result = train(cfg)
    result["wall_seconds"] = time.time() - started
    result["cli_args"] = args  # `prefgen train-rm` arguments for the same run
    return result, cfg
