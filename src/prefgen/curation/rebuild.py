"""`prefgen rebuild-pairs`: new pairs from a run's `responses/`, without generating or judging.

UltraFeedback's lesson (docs/research.md "UltraFeedback: ratings, critique and pairs"): keep the wide table of scored responses and
derive pairs from it, so new pairing rules cost seconds instead of GPU hours. This re-runs
`pairing.build_pairs` over each `responses/` shard (a prompt's responses are written by one
task, so they never span shards), then applies what in-stream pairing cannot:

* per-domain quotas (`apply_domain_quotas`), a cap across prompts; with quotas set, a first
  pass builds the pairs and keeps only their keys, a second pass writes the survivors, so
  memory holds one shard's pairs at a time;
* the reward-model verdict: `rm_margin` of the run's pairs (and of pairs the filter dropped,
  kept whole in `rejects/`) is carried over by pair id (ids depend only on the prompt and the
  two responses), `routing_score` is recomputed with it, and `--min-rm-margin` filters.

Knobs not given take the run's own pairing config from its manifest. Output:
`OUTPUT/pairs-rebuilt-<id>/part-NNNNN.parquet` (PAIR_SCHEMA), or with `out`, a new output
directory with `pairs/` and a manifest of its own (so `read_rows` and `train-rm` read it).
The run's manifest gains a `rebuilds` entry; its `pairs` list is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pyarrow.parquet as pq

from prefgen.data import storage
from prefgen.data.manifest import FORMAT_VERSION, now, read_manifest, shard_urls, write_manifest
from prefgen.data.schema import pairs_table
from prefgen.pairing.strategies import (
    build_pairs,
    judge_votes,
    output_pair,
    passes_rm_agreement,
    routing_score,
)

__all__ = ["OPTION_KEYS", "apply_domain_quotas", "rebuild_pairs", "responses_to_rows"]

# build_pairs knobs plus the cross-prompt ones; None means "take the run's config".
OPTION_KEYS = (
    "strategy",
    "min_margin",
    "min_chosen_score",
    "max_pairs_per_prompt",
    "max_length_ratio",
    "min_judge_agreement",
    "seed",
    "min_rm_margin",
    "domain_quotas",
)
_BUILD_KEYS = OPTION_KEYS[1:7]


def apply_domain_quotas(
    pairs: list[dict], quotas: dict[str, int], seed: int = 0
) -> tuple[list[dict], dict[str, int]]:
    """Cap pairs per domain across prompts (COIG-P's mixing ablation); returns (kept, dropped
    per domain). Needs the whole table, which in-stream pairing never sees.

    Within a capped domain, pairs are taken round-robin over prompts in a seeded order (each
    prompt's pairs in their stored order, largest margin first), so a quota spreads over as
    many prompts as it can instead of filling up with the prompts that gave many pairs.
    Domains without a quota are kept whole; kept pairs stay in input order.
    """
    entries: dict[str, list[tuple[int, str, int]]] = {}
    rank_in_prompt: Counter = Counter()
    for index, pair in enumerate(pairs):
        domain, prompt = str(pair.get("domain")), str(pair.get("prompt_id"))
        if domain not in quotas:
            continue
        rank = rank_in_prompt[(domain, prompt)]
        rank_in_prompt[(domain, prompt)] += 1
        order = hashlib.sha256(json.dumps([seed, prompt]).encode()).hexdigest()
        entries.setdefault(domain, []).append((rank, order, index))
    over: set[int] = set()
    dropped: dict[str, int] = {}
    for domain, items in entries.items():
        excess = sorted(items)[max(int(quotas[domain]), 0) :]
        over.update(index for _, _, index in excess)
        if excess:
            dropped[domain] = len(excess)
    return [p for i, p in enumerate(pairs) if i not in over], dropped


def responses_to_rows(responses: list[dict]) -> list[dict]:
    """`responses/` records -> build_pairs prompt rows, grouped by prompt_id in first-seen order.

    Prompt meta is not in the responses table, so rebuilt pairs carry an empty `prompt_meta`.
    """
    rows: dict[str, dict] = {}
    for r in responses:
        row = rows.get(r["prompt_id"])
        if row is None:
            row = rows[r["prompt_id"]] = {
                "id": r["prompt_id"],
                "messages": r.get("prompt"),
                "domain": r.get("domain"),
                "reference": r.get("reference"),
                "meta": {},
                "responses": [],
            }
        scores = r.get("scores") or {}
        row["responses"].append(
            {
                "model": r.get("model"),
                "sample": r.get("sample"),
                "system_prompt": r.get("system_prompt"),
                "text": r.get("text"),
                "scores": dict(scores.items() if isinstance(scores, dict) else scores),
                "overall": r.get("overall"),
            }
        )
    return list(rows.values())


def _read(shard_url: str, storage_options: dict | None, columns: list[str] | None = None):
    fs, path = storage.filesystem(shard_url, storage_options)
    with fs.open(path, "rb") as f:
        file = pq.ParquetFile(f)
        if columns is not None:  # older runs lack newer columns (rm_margin)
            columns = [c for c in columns if c in file.schema_arrow.names]
        return file.read(columns=columns).to_pylist()


def _run_facts(url: str, manifest: dict, storage_options: dict | None):
    """(pair id -> reward-model margin, the run's `judge` label or None), read from the kept
    pairs and from the pairs the RM filter dropped (kept whole in `rejects/`)."""
    margins: dict[str, float] = {}
    judge = None
    for shard in shard_urls(url, manifest, "pairs"):
        for rec in _read(shard, storage_options, ["id", "rm_margin", "judge"]):
            judge = judge or rec.get("judge")
            if rec.get("rm_margin") is not None:
                margins[rec["id"]] = rec["rm_margin"]
    for shard in shard_urls(url, manifest, "rejects"):
        for rec in _read(shard, storage_options, ["id", "stage", "raw"]):
            if rec.get("stage") == "filter" and rec.get("raw"):
                try:
                    margin = json.loads(rec["raw"]).get("rm_margin")
                except (ValueError, AttributeError):
                    continue
                if margin is not None:
                    margins[rec["id"]] = margin
    return margins, judge


def judge_label(config: dict) -> str:
    """The `judge` label from the config (LLM judges, then enabled verifiers), for runs whose
    pairs table is empty; otherwise the run's own label is reused."""
    judge = config.get("judge") or {}
    names = [j["name"] for j in judge.get("llm") or []]
    for key in ("math_verifier", "code_verifier"):
        verifier = judge.get(key) or {}
        if verifier.get("enabled"):
            names.append(verifier["name"])
    return "+".join(names)


def vote_exclusions(config: dict) -> tuple[str, ...]:
    """Score names that aggregate other judges (the ensemble's), kept out of judge votes."""
    ensemble = (config.get("judge") or {}).get("ensemble") or {}
    return (ensemble.get("name", "ensemble"),) if ensemble.get("members") else ()


def resolve_options(run_pairing: dict, given: dict[str, Any]) -> dict[str, Any]:
    """Effective options: what was given, else the run's own pairing config (pure)."""
    options = {}
    for key in OPTION_KEYS:
        value = given.get(key)
        options[key] = value if value is not None else run_pairing.get(key)
    options["seed"] = options["seed"] or 0
    options["domain_quotas"] = dict(options["domain_quotas"] or {})
    if options["strategy"] is None:
        raise ValueError("no pairing strategy given and none in the run's config")
    return options


def _build_shard(
    rows: list[dict], options: dict, judge: str, rm: dict[str, float], exclude: tuple[str, ...]
):
    pairs: list[dict] = []
    no_pair: Counter = Counter()
    dropped_by_rm = 0
    build_kwargs = {key: options[key] for key in _BUILD_KEYS}
    for row in rows:
        built, reason = build_pairs(
            row, options["strategy"], judge=judge, exclude_from_votes=exclude, **build_kwargs
        )
        if reason:
            no_pair[reason] += 1
        for pair in built:
            margin = rm.get(pair["id"])
            if margin is not None:
                agreement, n_judges = judge_votes(
                    pair["chosen_scores"], pair["rejected_scores"], exclude
                )
                pair["rm_margin"] = margin
                pair["routing_score"] = routing_score(pair["margin"], agreement, n_judges, margin)
            if options["min_rm_margin"] is not None and not passes_rm_agreement(
                margin, options["min_rm_margin"]
            ):
                dropped_by_rm += 1
                continue
            pairs.append(output_pair(pair, row["messages"], row["meta"]))
    return pairs, no_pair, dropped_by_rm


def rebuild_pairs(
    url: str,
    given: dict[str, Any],
    out: str | None = None,
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """Rebuild the run at `url` with the options in `given`; returns the manifest entry."""
    manifest = read_manifest(url, storage_options)
    if manifest is None:
        raise FileNotFoundError(f"{url}: no manifest.json (not a finished prefgen run)")
    options = resolve_options((manifest.get("config") or {}).get("pairing") or {}, given)
    source = [manifest.get("config_hash"), manifest.get("finished_at"), options]
    rebuild_id = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]
    rm, judge = _run_facts(url, manifest, storage_options)
    judge = judge or judge_label(manifest.get("config") or {})
    exclude = vote_exclusions(manifest.get("config") or {})
    sources = shard_urls(url, manifest, "responses")

    keep_ids: set[str] | None = None
    dropped_by_quota: dict[str, int] = {}
    if options["domain_quotas"]:
        keys = []
        for shard in sources:
            pairs, _, _ = _build_shard(
                responses_to_rows(_read(shard, storage_options)), options, judge, rm, exclude
            )
            keys.extend({k: p[k] for k in ("id", "domain", "prompt_id")} for p in pairs)
        kept, dropped_by_quota = apply_domain_quotas(
            keys, options["domain_quotas"], options["seed"]
        )
        keep_ids = {k["id"] for k in kept}

    target = out or storage.join(url, f"pairs-rebuilt-{rebuild_id}")
    fs, root = storage.filesystem(target, storage_options)
    table_dir = "pairs" if out else ""
    shards, no_pair, prompts, dropped_by_rm = [], Counter(), 0, 0
    for index, shard in enumerate(sources):
        rows = responses_to_rows(_read(shard, storage_options))
        prompts += len(rows)
        pairs, reasons, rm_drops = _build_shard(rows, options, judge, rm, exclude)
        no_pair.update(reasons)
        dropped_by_rm += rm_drops
        if keep_ids is not None:
            pairs = [p for p in pairs if p["id"] in keep_ids]
        if not pairs:
            continue
        name = "/".join(filter(None, [table_dir, f"part-{index:05d}.parquet"]))
        records = [
            {**p, "meta": json.dumps(p["meta"], ensure_ascii=False, default=str)} for p in pairs
        ]
        table = pairs_table(records)
        storage.write_parquet_atomic(fs, storage.join(root, name), table)
        shards.append({"path": name, "rows": len(records)})

    entry = {
        "id": rebuild_id,
        "created_at": now(),
        "location": f"pairs-rebuilt-{rebuild_id}" if out is None else out,
        "options": options,
        "counts": {
            "prompts": prompts,
            "pairs": sum(s["rows"] for s in shards),
            "no_pair_by_reason": dict(no_pair),
            "dropped_by_quota": dropped_by_quota,
            "dropped_by_rm": dropped_by_rm,
        },
        "shards": shards,
    }
    if out is None:  # shard paths relative to the run, like its own tables
        entry["shards"] = [{**s, "path": f"{entry['location']}/{s['path']}"} for s in shards]
    else:
        derived = {
            "format_version": FORMAT_VERSION,
            "name": f"{manifest.get('name')}-rebuilt-{rebuild_id}",
            "derived_from": url,
            "rebuild": entry,
            "config": manifest.get("config"),
            "finished_at": entry["created_at"],
            "counts": {"pairs": entry["counts"]["pairs"], "no_pair_by_reason": dict(no_pair)},
            "shards": {"pairs": shards, "responses": [], "rejects": []},
        }
        write_manifest(fs, root, derived)
    record_entry(url, "rebuilds", entry, storage_options)
    return entry


def record_entry(url: str, key: str, entry: dict, storage_options: dict | None = None) -> None:
    """Read-modify-write the run manifest: add `entry` to the list at `key`, replacing one with
    the same id (a re-run with the same options rewrites the same files)."""
    manifest = read_manifest(url, storage_options)
    entries = [e for e in manifest.get(key) or [] if e.get("id") != entry["id"]]
    manifest[key] = [*entries, entry]
    fs, root = storage.filesystem(url, storage_options)
    write_manifest(fs, root, manifest)


def entry_manifest(entry: dict) -> dict:
    """A manifest-shaped view of a rebuild or audit entry, so `read_rows(url, view, 'pairs')`
    reads its shards."""
    return {"shards": {"pairs": entry["shards"]}}
