"""Reward-model evaluation on held-out pairs: accuracy, calibration, margins.

In: a saved reward model (local path or fsspec URL) and pair files in any format
`prefgen.reward.data` reads. Out: a metrics dict, also written as `eval.json`, and
`eval.png` (histogram of reward margins r_c - r_r, reliability diagram).

Metrics:
- pairwise accuracy overall and per domain (a tie counts as half right);
- the Bradley-Terry loss -log sigmoid(r_c - r_r);
- expected calibration error of P(chosen > rejected) = sigmoid(r_c - r_r), 10 equal-width
  bins. Every pair's label is 1 as stored, so a model that always says 0.99 would look
  perfectly calibrated on those; each pair is therefore scored both ways (p with label 1,
  1 - p with label 0), which makes over- and under-confidence both visible (MORE: calibration error as a key RM metric;
  docs/research.md "Reward model training and evaluation").
"""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict
from typing import Any

from prefgen.data import storage

ECE_BINS = 10
MARGIN_BINS = 30


def score_pairs(model, tokenizer, records: list[dict], batch_size: int = 32):
    """(chosen rewards, rejected rewards) for normalized pair records."""
    from prefgen.reward.model import score

    was_training = model.training
    model.eval()
    try:
        prompts = [r["prompt"] for r in records]
        chosen, _ = score(model, tokenizer, prompts, [r["chosen"] for r in records], batch_size)
        rejected, _ = score(model, tokenizer, prompts, [r["rejected"] for r in records], batch_size)
    finally:
        model.train(was_training)
    return chosen, rejected


def pairwise_metrics(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    """Accuracy (ties count half), BT loss and mean margin over pairs of rewards."""
    n = len(chosen)
    if n == 0:
        return {"n": 0, "accuracy": float("nan"), "loss": float("nan"), "mean_margin": float("nan")}
    margins = [c - r for c, r in zip(chosen, rejected)]
    right = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    loss = sum(_softplus(-m) for m in margins) / n
    return {"n": n, "accuracy": right / n, "loss": loss, "mean_margin": sum(margins) / n}


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def calibration(margins: list[float], bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """(ECE, reliability bins) of sigmoid(margin) on the symmetrized set (see module docstring)."""
    probs, labels = [], []
    for m in margins:
        p = _sigmoid(m)
        probs += [p, 1.0 - p]
        labels += [1.0, 0.0]
    table = []
    ece = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        members = [
            (p, y) for p, y in zip(probs, labels) if lo <= p < hi or (i == bins - 1 and p == 1.0)
        ]
        if not members:
            table.append({"lo": lo, "hi": hi, "count": 0, "confidence": None, "frequency": None})
            continue
        confidence = sum(p for p, _ in members) / len(members)
        frequency = sum(y for _, y in members) / len(members)
        ece += len(members) / len(probs) * abs(frequency - confidence)
        table.append(
            {
                "lo": lo,
                "hi": hi,
                "count": len(members),
                "confidence": confidence,
                "frequency": frequency,
            }
        )
    return (ece if probs else float("nan")), table


def evaluate(
    model_url: str,
    data_url: str,
    out_dir: str | None,
    storage_options: dict | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Score every pair at `data_url` with the model at `model_url`; write eval.json/.png to out_dir."""
    from prefgen.reward.data import load_pairs
    from prefgen.reward.model import load_reward_model

    started = time.time()
    records, skipped = load_pairs(data_url, storage_options)
    if not records:
        raise ValueError(f"{data_url}: no usable pairs (skipped: {skipped or 'none'})")
    model, tokenizer = load_reward_model(model_url, storage_options)
    chosen, rejected = score_pairs(model, tokenizer, records, batch_size)
    margins = [c - r for c, r in zip(chosen, rejected)]
    result: dict[str, Any] = {
        "model": model_url,
        "data": data_url,
        "n_pairs": len(records),
        "skipped": skipped,
        **{k: v for k, v in pairwise_metrics(chosen, rejected).items() if k != "n"},
    }
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_domain[record["domain"] or "(none)"].append(i)
    result["per_domain"] = {
        domain: {
            k: v
            for k, v in pairwise_metrics(
                [chosen[i] for i in idx], [rejected[i] for i in idx]
            ).items()
            if k in ("n", "accuracy", "mean_margin")
        }
        for domain, idx in sorted(by_domain.items())
    }
    result["ece"], result["reliability"] = calibration(margins)
    result["margin_histogram"] = _histogram(margins, MARGIN_BINS)
    ordered = sorted(margins)
    result["margin_stats"] = {
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "max": ordered[-1],
    }
    result["reward_stats"] = {
        "mean_chosen": sum(chosen) / len(chosen),
        "mean_rejected": sum(rejected) / len(rejected),
    }
    result["seconds"] = round(time.time() - started, 2)
    if out_dir:
        write_report(result, out_dir, storage_options)
        result["out_dir"] = out_dir
    return result


def _histogram(values: list[float], bins: int) -> dict[str, list[float]]:
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def write_report(result: dict, out_dir: str, storage_options: dict | None = None) -> None:
    fs, root = storage.filesystem(out_dir, storage_options)
    storage.write_bytes_atomic(fs, storage.join(root, "eval.png"), render_png(result))
    storage.write_json_atomic(fs, storage.join(root, "eval.json"), result)


def render_png(result: dict) -> bytes:
    """Margin histogram and reliability diagram as PNG bytes (Agg canvas; no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    left, right = fig.subplots(1, 2)
    hist = result["margin_histogram"]
    edges = hist["edges"]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    left.bar(edges[:-1], hist["counts"], width=widths, align="edge", edgecolor="black")
    left.axvline(0.0, color="red", linestyle="--", linewidth=1)
    left.set_xlabel("reward margin r(chosen) - r(rejected)")
    left.set_ylabel("pairs")
    left.set_title(f"margins (accuracy {result['accuracy']:.3f}, n={result['n_pairs']})")
    filled = [b for b in result["reliability"] if b["count"]]
    right.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect")
    right.bar(
        [b["lo"] for b in filled],
        [b["frequency"] for b in filled],
        width=[b["hi"] - b["lo"] for b in filled],
        align="edge",
        alpha=0.6,
        edgecolor="black",
        label="observed frequency",
    )
    right.plot(
        [b["confidence"] for b in filled],
        [b["frequency"] for b in filled],
        marker="o",
        color="black",
        label="bin mean",
    )
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_xlabel("predicted P(first preferred) = sigmoid(margin)")
    right.set_ylabel("observed frequency")
    right.set_title(f"reliability (symmetrized, ECE {result['ece']:.3f})")
    right.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
