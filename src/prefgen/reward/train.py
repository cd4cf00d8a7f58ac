"""Reward-model training: pairs in, a self-describing model directory out.

In: preference pairs (any format `prefgen.reward.data` reads) and a `RewardTrainConfig`.
Out, under `output.path` (local directory or any fsspec URL):
- `train/`: checkpoints (`checkpoint_NNNNNNN/` with `model/` + `state.pt`) committed by
  `train/latest.json` (`prefgen.reward.checkpoints`). A re-run with the same output resumes
  from the latest one.
- `model/`: the final model (`save_reward_model` layout) with `meta.training` filled in; its
  `prefgen_reward.json` is uploaded last, so a directory without it is incomplete.

Where it runs. Several workers (`num_workers`), or a Ray cluster to join, run the loop on Ray
Train's TorchTrainer with DDP. One worker on this machine runs it here, in this process:
Ray Train would add its controller and five helper actors, which took ~14 % of a core beside
a 2-core worker (its steps ran 18 % slower than the same steps in a plain process) and ~20 s
of start-up. Both ways share the loop and the checkpoints, so a run resumes whichever way it
ran before.

The objective per pair (Bradley-Terry, docs/research.md "Reward model training and evaluation"):
    -log sigmoid(r_c - r_r - m) + center_weight * (r_c + r_r)^2 + aspect_loss_weight * MSE
where m = margin_loss_weight * margin / (mean |margin| of the training pairs), so a typical
pair asks for a gap of `margin_loss_weight` (Llama-2-style margin); the centering term
(Eisenstein et al.) pins the otherwise free offset of BT rewards near zero, and the aspect
term trains the per-aspect heads on the judges' per-aspect scores where a pair has them.

The split is by prompt hash (`eval_fraction`), the batch order a pure function of
(seed, epoch), so a resumed run replays exactly the steps a straight run would have taken.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefgen.config import RewardTrainConfig, load, to_dict
from prefgen.data import ray_cluster, storage
from prefgen.reward.checkpoints import CheckpointStore
from prefgen.reward.objective import (
    aspect_stats,
    batch_loss,
    epoch_batches,
    lr_factor,
    margin_scale,
    step_passes,
)

STATE_FILE = "state.pt"
RUN_NAME = "train"  # the checkpoint store under output.path
# a resumed run must match these
IDENTITY_KEYS = ("data_fingerprint", "step_pairs", "backbone", "init_from", "group_by_length")


def load_reward_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RewardTrainConfig:
    """YAML file (optional) + `key=value` overrides -> a validated RewardTrainConfig."""
    return load(path, overrides, RewardTrainConfig)


# --- the training loop (every worker of a run, or this process) ---


@dataclass
class World:
    """Where the loop runs: its rank among `size` workers, and how the model is placed
    (DDP-wrapped and moved on a Ray Train worker; moved to `device` here)."""

    rank: int = 0
    size: int = 1
    device: str = "cpu"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)


class RayTrainWorld(World):
    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        super().__init__(context.get_world_rank(), context.get_world_size())

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        # Backbones compute parts the reward never uses (BERT's pooler), so DDP must look for
        # parameters without gradients instead of waiting for them forever.
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}
        )


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry on every worker."""
    import ray

    world = RayTrainWorld()
    train_records = ray.get(config["train_ref"])
    eval_records = ray.get(config["eval_ref"]) if world.rank == 0 else []
    run_loop(config, world, train_records, eval_records)


def run_loop(config: dict, world: World, train_records: list, eval_records: list) -> None:
    """Train from the latest checkpoint (or from scratch) to the target step; rank 0
    evaluates, checkpoints and prints."""
    from safetensors.torch import load_file

    from prefgen.reward.evaluate import pairwise_metrics, score_pairs
    from prefgen.reward.model import (
        WEIGHTS_FILE,
        build_reward_model,
        pair_token_lengths,
        save_reward_model,
    )

    rank, size = world.rank, world.size
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    store = CheckpointStore(config["run_url"], config["storage_options"], config["keep"])

    model, tokenizer = build_reward_model(
        config["backbone"], config["aspects"], config["max_length"]
    )
    # fused: one kernel for the whole update (HF's default optimizer since torch 2.8)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"], fused=True
    )
    total, spe = config["total_steps"], config["steps_per_epoch"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, config["warmup_ratio"])
    )

    def say(line: str) -> None:
        # Not print(): Ray Train routes print through its logger, which echoes every line twice.
        if rank == 0:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    start_step, history = 0, []
    latest = store.latest()
    if latest is not None:
        with store.local(latest["name"]) as directory:
            state = torch.load(directory / STATE_FILE, weights_only=True)
            for key in IDENTITY_KEYS:
                if state.get(key) != config[key]:
                    raise ValueError(
                        f"the checkpoint in {config['output']} was made with a different {key}; "
                        "set resume=false or use another output.path"
                    )
            model.load_state_dict(load_file(str(directory / "model" / WEIGHTS_FILE)))
            start_step, history = int(state["step"]), list(state["history"])
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            else:  # a finished run's checkpoint (see checkpoint), trained further
                say(
                    f"[train-rm] step {start_step} ends a finished run, saved without the "
                    "optimizer's state: AdamW starts its moments afresh"
                )
            scheduler.load_state_dict(state["scheduler"])
            # the step's rate under this run's schedule (a longer run has another one)
            for group in optimizer.param_groups:
                group["lr"] = config["lr"] * lr_factor(start_step, total, config["warmup_ratio"])
    elif config["init_from"]:  # a resumed run has its own weights: only a fresh one starts here
        _load_weights(model, config["init_from"], config["init_options"])
    resumed_from = start_step
    wrapped = world.prepare(model)
    device = next(model.parameters()).device
    bf16 = native_bf16(device) if config["bf16"] is None else config["bf16"]
    target = min(total, config["max_steps"] or total)

    def evaluate_now() -> dict:
        if not eval_records:
            return {}
        chosen, rejected = score_pairs(model, tokenizer, eval_records, config["batch_size"])
        m = pairwise_metrics(chosen, rejected)
        rewards = chosen + rejected
        return {
            "eval_loss": m["loss"],
            "eval_accuracy": m["accuracy"],
            "eval_mean_reward": sum(rewards) / len(rewards),
        }

    def checkpoint(metrics: dict) -> None:
        def write(directory: Path) -> None:
            save_reward_model(model, tokenizer, directory / "model")
            state = {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "history": history,
                **{k: config[k] for k in IDENTITY_KEYS},
            }
            if step < total:  # the optimizer's moments (2x the weights) only serve a resume
                state["optimizer"] = optimizer.state_dict()
            torch.save(state, directory / STATE_FILE)

        store.save(step, write, metrics)

    if resumed_from:
        say(f"[train-rm] resumed from step {resumed_from}/{total}")
    elif rank == 0 and eval_records:  # the untrained baseline, so the history shows the gain
        history.append({"step": 0, "train_loss": None, **evaluate_now()})
        say(f"[train-rm] step 0/{total}  eval_acc {history[0]['eval_accuracy']:.3f}")
    step, losses, batches, batches_epoch = start_step, [], [], -1
    lengths = None
    if config["group_by_length"]:
        lengths = pair_token_lengths(tokenizer, train_records, config["max_length"])
    started = time.time()
    wrapped.train()
    while step < target:
        epoch, index = divmod(step, spe)
        if epoch != batches_epoch:
            batches = epoch_batches(
                len(train_records), config["step_pairs"], size, config["seed"], epoch, lengths
            )
            batches_epoch = epoch
        optimizer.zero_grad(set_to_none=True)
        passes = step_passes(batches[index], config["batch_size"])
        for indices in passes:  # gradient accumulation: one backward per pass, one step
            batch = [train_records[i] for i in indices[rank::size]]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, parts = batch_loss(wrapped, tokenizer, batch, config, device)
            (loss / len(passes)).backward()
        if config["max_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(float(loss.detach()))
        do_eval = step % config["eval_every_steps"] == 0 or step == target
        do_checkpoint = step % config["checkpoint_every_steps"] == 0 or step == target
        if not (do_eval or do_checkpoint):
            continue
        metrics = {
            "step": step,
            "epoch": epoch,
            "train_loss": sum(losses) / len(losses),
            "train_bt": parts["bt"],
            "train_center": parts["center"],
            "lr": scheduler.get_last_lr()[0],
            "resumed_from_step": resumed_from,
            "total_steps": total,
            "done": step >= total,
            "seconds": round(time.time() - started, 2),
            "bf16": bf16,
            **{k: config[k] for k in IDENTITY_KEYS},
        }
        losses = []
        if do_eval and rank == 0:
            metrics.update(evaluate_now())
        history.append(
            {k: metrics.get(k) for k in ("step", "train_loss", "eval_loss", "eval_accuracy")}
        )
        metrics["history"] = history
        say(
            f"[train-rm] step {step}/{total}  loss {metrics['train_loss']:.4f}"
            + (f"  eval_acc {metrics['eval_accuracy']:.3f}" if "eval_accuracy" in metrics else "")
            + f"  {metrics['seconds']:.0f}s"
        )
        if do_checkpoint and rank == 0:
            checkpoint(metrics)


def _load_weights(model, url: str, storage_options: dict) -> None:
    """Continue training: the weights of a saved reward model on the same architecture."""
    from safetensors.torch import load_file

    from prefgen.reward.model import WEIGHTS_FILE, local_copy

    weights = load_file(str(Path(local_copy(url, storage_options)) / WEIGHTS_FILE))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(
            f"init_from={url} is not a reward model on this backbone and these aspects: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs at hardware speed on `device`. On a CPU without AVX512-BF16 or AMX
    bf16 is emulated: about 20x slower than fp32 on the AVX2 machines this was measured on
    (TRL's default bf16 is the trap this avoids)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


# --- the driver ---


def train(cfg: RewardTrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) and publish `<output.path>/model`; returns a summary dict."""
    import hashlib

    from prefgen.reward.data import load_pairs, split_pairs

    started = time.time()
    records, skipped = load_pairs(cfg.data.path, cfg.data.storage_options)
    train_records, eval_records = split_pairs(records, cfg.eval_fraction)
    if not train_records:
        raise ValueError(f"{cfg.data.path}: no training pairs (read {len(records)}, {skipped=})")
    log(
        f"[train-rm] {len(records)} pairs from {cfg.data.path}: {len(train_records)} train, "
        f"{len(eval_records)} held out" + (f"; skipped {skipped}" if skipped else "")
    )
    step_pairs = cfg.batch_size * cfg.gradient_accumulation_steps
    steps_per_epoch = len(
        epoch_batches(len(train_records), step_pairs, cfg.num_workers, cfg.seed, 0)
    )
    total_steps = steps_per_epoch * cfg.epochs
    target = min(total_steps, cfg.max_steps or total_steps)
    identity = {  # what a checkpoint must share with this run to be resumed
        "data_fingerprint": hashlib.sha256(
            "\0".join(r["id"] for r in train_records).encode()
        ).hexdigest(),
        "step_pairs": step_pairs,
        "backbone": cfg.backbone,
        "init_from": cfg.init_from,
        "group_by_length": cfg.group_by_length,
    }

    normalization = aspect_stats(train_records, list(cfg.aspects))
    gap_scale = margin_scale(train_records)
    out_options = storage.resolve_options(cfg.output.path, cfg.output.storage_options)
    out_fs, out_root = storage.filesystem(cfg.output.path, out_options)
    if storage.is_local(out_fs):
        out_root = os.path.abspath(out_root)
        os.makedirs(out_root, exist_ok=True)
    run_url = storage.join(out_root if storage.is_local(out_fs) else cfg.output.path, RUN_NAME)
    store = CheckpointStore(run_url, out_options, cfg.keep_checkpoints)
    if not cfg.resume:
        store.clear()

    latest = store.latest()
    ran_on = None  # where this call trained: a Ray cluster, or this process
    finished = _finished(latest, identity, target)
    if finished:
        log(f"[train-rm] {run_url} already holds step {latest['step']}: nothing to train")
    else:
        here = cfg.num_workers == 1 and ray_cluster.configured_address(cfg.ray.address) is None
        if here:
            cpus = worker_cpus(cfg, float(cfg.ray.num_cpus or ray_cluster.usable_cpus()))
        else:
            import ray

            cluster = ray_cluster.connect(cfg.ray.address, cfg.ray.num_cpus)
            cpus = worker_cpus(cfg, ray.available_resources().get("CPU", 1.0))
            ran_on = f"Ray Train on {cluster.describe()}"
        loop_config = {
            **{k: getattr(cfg, k) for k in _LOOP_KEYS},
            **identity,
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "margin_scale": gap_scale,
            "aspect_stats": normalization,
            "cpus": cpus,
            "threads": max(1, int(cpus)),
            "output": cfg.output.path,
            "run_url": run_url,
            "storage_options": out_options,
            "keep": cfg.keep_checkpoints,
            # init_from lives where the models do: read it with the output's options
            "init_options": (
                storage.resolve_options(cfg.init_from, cfg.output.storage_options)
                if cfg.init_from
                else {}
            ),
        }
        where = "in this process" if here else f"on {cfg.num_workers} Ray Train worker(s)"
        log(
            f"[train-rm] {total_steps} steps ({cfg.epochs} epoch(s) x {steps_per_epoch})"
            f" {where} x {cpus:g} CPU, checkpoints in {run_url}"
        )
        if here:
            ran_on = f"this process ({cpus:g} CPUs, no Ray)"
            _train_here(cfg, loop_config, train_records, eval_records)
        else:
            _fit(cfg, loop_config, train_records, eval_records, out_fs, out_root)
        latest = store.latest()
        if latest is None or latest["step"] < target:
            raise RuntimeError(f"training ended without a checkpoint of step {target} in {run_url}")
    metrics = dict(latest["metrics"])
    if finished:  # nothing trained in this call: it "resumed" at its end
        metrics["resumed_from_step"] = metrics["step"]
    training = {
        "data": cfg.data.path,
        "n_train": len(train_records),
        "n_eval": len(eval_records),
        "skipped": skipped,
        "steps": metrics.get("step"),
        "total_steps": total_steps,
        "complete": metrics.get("step") == total_steps,
        "resumed_from_step": metrics.get("resumed_from_step"),
        "eval_accuracy": metrics.get("eval_accuracy"),
        "eval_loss": metrics.get("eval_loss"),
        "history": metrics.get("history", []),
        "loop_seconds": metrics.get("seconds"),  # the training steps alone (this invocation)
        "bf16": metrics.get("bf16"),
        "loss": {
            "margin_loss_weight": cfg.margin_loss_weight,
            "margin_scale": gap_scale,
            "center_weight": cfg.center_weight,
            "aspects": list(cfg.aspects),
            "aspect_loss_weight": cfg.aspect_loss_weight,
        },
        "aspect_normalization": {k: {"mean": m, "std": sd} for k, (m, sd) in normalization.items()},
        "backbone": cfg.backbone,
        "init_from": cfg.init_from,
        "config": to_dict(cfg),
        "checkpoint": storage.join(run_url, latest["name"]),
        "seconds": round(time.time() - started, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    model_url = storage.join(cfg.output.path, "model")
    with store.local(latest["name"]) as directory:
        _publish_model(directory / "model", training, out_fs, storage.join(out_root, "model"))
    log(f"[train-rm] model written to {model_url}")
    return {**training, "model": model_url, "ran_on": ran_on}


_LOOP_KEYS = (
    "aspects", "batch_size", "max_length", "lr", "weight_decay", "warmup_ratio", "max_grad_norm",
    "eval_every_steps", "checkpoint_every_steps", "max_steps", "seed", "margin_loss_weight",
    "center_weight", "aspect_loss_weight", "bf16",
)  # fmt: skip


def _finished(latest: dict | None, identity: dict, target: int) -> bool:
    """Whether the latest checkpoint already reached `target` for this data and setup."""
    if latest is None or latest["step"] < target:
        return False
    return all(latest["metrics"].get(k) == v for k, v in identity.items())


def worker_cpus(cfg: RewardTrainConfig, cluster_cpus: float) -> float:
    """CPUs (and torch threads) per worker: the configured number, else a share of the free ones.

    A worker on one CPU runs torch on one thread; on a 2-core machine that halves the speed.
    """
    if cfg.cpus_per_worker is not None:
        return cfg.cpus_per_worker
    return max(1.0, float(int(cluster_cpus // cfg.num_workers)))


def _train_here(cfg: RewardTrainConfig, loop_config: dict, train_records, eval_records) -> None:
    """The loop in this process (one worker, no cluster); torch's thread count is restored."""
    threads = torch.get_num_threads()
    device = "cuda" if cfg.use_gpu else "cpu"
    try:
        run_loop(loop_config, World(device=device), train_records, eval_records)
    finally:
        torch.set_num_threads(threads)


def _fit(cfg: RewardTrainConfig, loop_config: dict, train_records, eval_records, fs, root: str):
    """The loop on Ray Train's TorchTrainer: `num_workers` workers with DDP."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            **loop_config,
            "train_ref": ray.put(train_records),
            "eval_ref": ray.put(eval_records),
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": loop_config["cpus"],
                **({"GPU": 1} if cfg.use_gpu else {}),
            },
        ),
        run_config=RunConfig(name=RUN_NAME, **_arrow_storage(fs, root)),
    )
    trainer.fit()  # raises ray.train.TrainingFailedError when a worker fails


def _arrow_storage(fs, root: str) -> dict:
    """RunConfig storage arguments: a local path, or a path on the fsspec filesystem for object stores."""
    if storage.is_local(fs):
        return {"storage_path": root}
    # Ray Train writes its run state through pyarrow; hand it the same fsspec instance
    # (endpoint, credentials), pickled to every worker.
    return {"storage_path": root, "storage_filesystem": storage.arrow_filesystem(fs)}


def _publish_model(source: Path, training: dict, fs, target: str) -> None:
    """Copy a checkpoint's model dir to `target` with meta.training set; the meta file goes last."""
    import json
    import shutil

    from prefgen.reward.model import META_FILE

    meta = json.loads((source / META_FILE).read_text())
    meta["training"] = training
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "model"
        shutil.copytree(source, staged)
        (staged / META_FILE).unlink()
        storage.remove_tree(fs, target)
        storage.put_tree(staged, fs, target)
    storage.write_bytes_atomic(
        fs, storage.join(target, META_FILE), json.dumps(meta, indent=2, default=str).encode()
    )
