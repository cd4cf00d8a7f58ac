"""A finished prefgen run directory built by hand (no pipeline): realistic `responses/`,
`pairs/`, `rejects/` shards and a `manifest.json` whose counts match them.

Used by the rebuild, audit and report tests. Two LLM judges (`judge_a`, `judge_b`, 1-10) and
the math verifier score every response; `overall` is their mean rescaled to 1-10, as
`judges.scoring` does. Judge A likes long answers (so the report has a length bias to find).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.curation.rebuild import responses_to_rows
from prefgen.data.schema import PAIR_SCHEMA, PAIR_SCORE_COLUMNS, REJECT_SCHEMA, RESPONSE_SCHEMA
from prefgen.pairing.strategies import build_pairs, output_pair

MODELS = ("alpha-7b", "beta-8b", "gamma-1b")
DOMAINS = ("math", "chat", "code")
JUDGE = "judge_a+judge_b+math"
PAIRING = {
    "strategy": "best_vs_worst",
    "min_margin": 1.0,
    "min_chosen_score": None,
    "max_pairs_per_prompt": None,
    "max_length_ratio": None,
    "min_judge_agreement": None,
    "domain_quotas": {},
    "seed": 0,
}
CONFIG = {
    "name": "handmade",
    "judge": {
        "llm": [{"name": "judge_a", "rubric": "coig_p"}, {"name": "judge_b", "rubric": "coig_p"}],
        "math_verifier": {"enabled": True, "name": "math"},
        "code_verifier": {"enabled": False, "name": "tests"},
    },
    "pairing": PAIRING,
    "generate": {"models": [{"name": m} for m in MODELS]},
}


def make_responses(n_prompts: int = 18, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for p in range(n_prompts):
        domain = DOMAINS[p % len(DOMAINS)]
        prompt = [{"role": "user", "content": f"{domain} question number {p}?"}]
        for m, model in enumerate(MODELS):
            n_words = rng.randint(3, 60)
            text = " ".join(f"w{(p + m + i) % 17}" for i in range(n_words))
            quality = rng.uniform(1, 10)
            a = min(10.0, max(1.0, round(quality / 2 + n_words / 8, 1)))  # length-biased
            b = min(10.0, max(1.0, round(quality + rng.uniform(-2, 2), 1)))
            scores = {"judge_a": a, "judge_b": b}
            if domain == "math":
                scores["math"] = float(quality > 5)
            # overall: mean over scorers, each rescaled to 1-10 (verifier 0/1 -> 1/10)
            rescaled = [a, b] + ([1 + 9 * scores["math"]] if "math" in scores else [])
            records.append(
                {
                    "prompt_id": f"p{p:03d}",
                    "prompt": prompt,
                    "domain": domain,
                    "reference": "42" if domain == "math" else None,
                    "model": model,
                    "sample": 0,
                    "system_prompt": None,
                    "text": text,
                    "finish_reason": "stop",
                    "n_tokens": n_words + 2,
                    "gen_seconds": round(0.05 * n_words * (m + 1), 3),
                    "scores": scores,
                    "rationales": {},
                    "judge_status": {k: "ok" for k in scores},
                    "overall": sum(rescaled) / len(rescaled),
                    "no_pair_reason": None,
                }
            )
    return records


def _write(path: Path, records: list[dict], schema: pa.Schema) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in records:
        r = dict(r)
        for key in ("scores", "rationales", "judge_status"):
            if isinstance(r.get(key), dict):
                r[key] = list(r[key].items())
        for key in PAIR_SCORE_COLUMNS:
            if isinstance(r.get(key), dict):
                r[key] = [{"name": k, "score": v} for k, v in r[key].items()]
        rows.append(r)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return {"path": str(path.relative_to(path.parent.parent)), "rows": len(records)}


def make_run(root: Path, n_prompts: int = 18, n_shards: int = 2, rm_every: int = 3) -> dict:
    """Write the run under `root`; returns {"url", "responses", "pairs", "rejects", "manifest"}.

    Every `rm_every`-th pair got a reward-model verdict: kept pairs carry `rm_margin`, and one
    pair the reward model "dropped" sits in `rejects/` (stage filter) with its margin in raw.
    """
    responses = make_responses(n_prompts)
    rows = responses_to_rows(responses)
    per_shard = -(-len(rows) // n_shards)
    shards: dict[str, list] = {"pairs": [], "responses": [], "rejects": []}
    all_pairs, all_rejects = [], []
    no_pair: Counter = Counter()
    filtered: Counter = Counter()
    n_rm = 0
    kwargs = {k: PAIRING[k] for k in ("min_margin", "min_chosen_score", "max_pairs_per_prompt")}
    for s in range(n_shards):
        chunk = rows[s * per_shard : (s + 1) * per_shard]
        ids = {r["id"] for r in chunk}
        pairs, rejects = [], []
        for row in chunk:
            built, reason = build_pairs(row, PAIRING["strategy"], judge=JUDGE, **kwargs)
            if reason:
                no_pair[reason] += 1
                rejects.append(_reject(row["id"], "pair", f"no_pair: {reason}", "{}"))
            for pair in (output_pair(b, row["messages"], row["meta"]) for b in built):
                n_rm += 1
                if n_rm % rm_every == 0:
                    pair["rm_margin"] = round(0.5 - (n_rm % 2), 2)  # alternately +0.5 / -0.5
                if (pair.get("rm_margin") or 0) < 0:  # the RM filter drops it: whole pair in raw
                    filtered["rm_inverted"] += 1
                    rejects.append(_reject(pair["id"], "filter", "rm_inverted", json.dumps(pair)))
                else:
                    pairs.append(pair)
        rejects.append(_reject(None, "ingest", "empty_prompt: no user message", '{"x": 1}'))
        part = f"part-{s:05d}.parquet"
        shard_responses = [r for r in responses if r["prompt_id"] in ids]
        shards["responses"].append(
            _write(root / "responses" / part, shard_responses, RESPONSE_SCHEMA)
        )
        out_pairs = [{**p, "meta": json.dumps(p["meta"])} for p in pairs]
        shards["pairs"].append(_write(root / "pairs" / part, out_pairs, PAIR_SCHEMA))
        shards["rejects"].append(_write(root / "rejects" / part, rejects, REJECT_SCHEMA))
        all_pairs += pairs
        all_rejects += rejects
    models: dict[str, Counter] = {}
    for r in responses:
        m = models.setdefault(r["model"], Counter())
        m["responses"] += 1
        m["tokens"] += r["n_tokens"]
        m["gen_seconds"] += r["gen_seconds"]
        m["errors"] += 0
    manifest = {
        "format_version": 1,
        "name": "handmade",
        "config": CONFIG,
        "config_hash": "0123456789abcdef",
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": "2025-01-01T00:10:00+00:00",
        "seconds": 600.0,
        "counts": {
            "records_in": len(rows) + n_shards,
            "prompts_ok": len(rows),
            "responses": len(responses),
            "pairs": len(all_pairs),
            "rejected_by_reason": {"empty_prompt": n_shards},
            "no_pair_by_reason": dict(no_pair),
            "filtered_by_reason": dict(filtered),
            "models": {
                k: {**v, "tokens_per_s": round(v["tokens"] / v["gen_seconds"], 2)}
                for k, v in models.items()
            },
        },
        "shards": shards,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {
        "url": str(root),
        "responses": responses,
        "rows": rows,
        "pairs": all_pairs,
        "rejects": all_rejects,
        "manifest": manifest,
    }


def _reject(pid, stage: str, reason: str, raw: str) -> dict:
    return {
        "id": pid,
        "source": "in.jsonl",
        "index": 0,
        "stage": stage,
        "reason": reason,
        "raw": raw,
    }
