"""The reward model's training objective and schedule: pure functions, tested without Ray.

Bradley-Terry with an optional margin, reward centering (Eisenstein et al.) and per-aspect
regression (docs/research.md "Reward model training and evaluation"); the batch order and learning-rate schedule are pure functions of the
step, which is what lets a resumed run replay exactly the steps a straight run would take.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def preference_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margins: torch.Tensor | None = None,
    center_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of -log sigmoid(r_c - r_r - m) + center_weight * (r_c + r_r)^2 over the batch."""
    gap = chosen - rejected
    if margins is not None:
        gap = gap - margins
    bt = -F.logsigmoid(gap).mean()
    center = ((chosen + rejected) ** 2).mean()
    loss = bt + center_weight * center if center_weight else bt
    return loss, {"bt": float(bt.detach()), "center": float(center.detach())}


def aspect_loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE over the aspect scores present (NaN = absent); 0 (still in the graph) if none are."""
    present = ~torch.isnan(targets)
    if not present.any():
        return predicted.sum() * 0.0  # keeps DDP's gradient buckets complete
    return ((predicted[present] - targets[present]) ** 2).mean()


def margin_scale(records: list[dict]) -> float:
    """Mean |margin| of the pairs that have one (1.0 if none do)."""
    margins = [abs(r["margin"]) for r in records if r.get("margin")]
    return sum(margins) / len(margins) if margins else 1.0


def aspect_stats(records: list[dict], aspects: list[str]) -> dict[str, list[float]]:
    """{aspect: [mean, std]} over the training responses' scores.

    The heads learn z-scores: judges score on 1-10 or 0-1 scales, and a raw MSE in the tens
    would drown the Bradley-Terry term. Raw = prediction * std + mean (kept in meta.training).
    """
    stats = {}
    for name in aspects:
        values = [
            scores[name]
            for r in records
            for scores in (r["chosen_aspects"], r["rejected_aspects"])
            if scores and name in scores
        ]
        if not values:
            known = sorted(
                {
                    k
                    for r in records
                    for side in ("chosen", "rejected")
                    for k in r[f"{side}_aspects"] or {}
                }
            )
            raise ValueError(f"aspect {name!r} has no scores in the data; known: {known}")
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        stats[name] = [mean, std if std > 1e-6 else 1.0]
    return stats


def epoch_batches(
    n: int,
    batch_size: int,
    world_size: int,
    seed: int,
    epoch: int,
    lengths: list[int] | None = None,
) -> list[list]:
    """Record indices per global step of one epoch; a tail too small to give every worker a pair is dropped.

    With `lengths` (group_by_length), each run of GROUP_BATCHES batches of the shuffled order is
    sorted by length before it is cut, then the batches are shuffled: a batch pads to its longest
    text, so like lengths together spend less compute on padding (HF's LengthGroupedSampler).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is not None:
        group = batch_size * GROUP_BATCHES
        order = [
            i
            for start in range(0, n, group)
            for i in sorted(order[start : start + group], key=lambda i: -lengths[i])
        ]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return [b for b in batches if len(b) >= world_size]


GROUP_BATCHES = 50  # batches per length-sorted group: HF's megabatch


def lr_factor(step: int, total_steps: int, warmup_ratio: float) -> float:
    warmup = int(total_steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def step_passes(step_indices: list[int], batch_size: int) -> list[list[int]]:
    """One optimizer step's pairs cut into forward/backward passes of batch_size."""
    return [step_indices[i : i + batch_size] for i in range(0, len(step_indices), batch_size)]


def batch_loss(model, tokenizer, batch: list[dict], config: dict, device):
    """The loss of one forward/backward pass over `batch` (chosen and rejected in one forward),
    and its parts; `config` holds the loop's loss settings."""
    from prefgen.reward.model import encode_pairs

    k = len(batch)
    prompts = [r["prompt"] for r in batch]
    enc = encode_pairs(
        tokenizer,
        prompts + prompts,
        [r["chosen"] for r in batch] + [r["rejected"] for r in batch],
        config["max_length"],
    )
    rewards, aspects = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
    rewards = rewards.float()  # the loss in fp32, also under bf16 autocast
    aspects = aspects.float() if aspects is not None else None
    margins = None
    if config["margin_loss_weight"]:
        scale = config["margin_scale"]
        margins = torch.tensor(
            [config["margin_loss_weight"] * max(0.0, r["margin"] or 0.0) / scale for r in batch],
            dtype=rewards.dtype,
            device=device,
        )
    loss, parts = preference_loss(rewards[:k], rewards[k:], margins, config["center_weight"])
    if aspects is not None:
        names = config["aspects"]
        targets = torch.tensor(
            [_aspect_row(r["chosen_aspects"], names, config["aspect_stats"]) for r in batch]
            + [_aspect_row(r["rejected_aspects"], names, config["aspect_stats"]) for r in batch],
            dtype=aspects.dtype,
            device=device,
        )
        loss = loss + config["aspect_loss_weight"] * aspect_loss(aspects, targets)
    return loss, parts


def _aspect_row(scores: dict | None, names: list[str], stats: dict) -> list[float]:
    scores = scores or {}
    return [(scores[n] - stats[n][0]) / stats[n][1] if n in scores else math.nan for n in names]
