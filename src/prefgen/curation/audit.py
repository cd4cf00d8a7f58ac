"""Human in the loop: a stratified, blinded audit sample out to Label Studio or Argilla, and
the labels back in as `pairs-audited/` (COIG-P §3.4; Hybrid Preferences; Skywork's gold set).

Export (`export_audit`): per domain, up to `per_domain` pairs (COIG-P audits 40 per domain).
Sampling is stratified by routing score (`pairing.routing_score`, recomputed here with the
reward-model margin when the pair has one) into ROUTING_BINS with equal allocation: the
uncertain pairs a human is most useful on are over-represented, yet the confident ones are
still measured, and `merge` re-weights agreement by each bin's share of the domain so the
dataset-level estimate stays unbiased. Within a bin the draw is a seeded hash order, so the
same seed gives the same sample. Each item shows the prompt and the two responses as A and B
in a per-pair seeded random order (annotators must not learn that A is the judge's pick); the
mapping travels inside the item (Label Studio `data.prefgen`, Argilla `metadata`), hidden
from the labelling view, so merging needs only the labels file.

The question is HelpSteer3's 7-point preference (CHOICES: "A is much better" = -3 ..
"B is much better" = +3). Label Studio: import the JSON tasks with LABEL_STUDIO_CONFIG (also
written next to the file). Argilla (2.x): records in `Record.to_dict()` shape; create the
dataset with TextFields prompt/response_a/response_b and
`rg.LabelQuestion(name="preference", labels=list(CHOICES))`, then `dataset.records.log(...)`.

Merge (`merge_audit`) reads either tool's export (Label Studio JSON or JSON-MIN; Argilla
`to_list(flatten=False)`/`records.json` or flattened), averages the annotators of a pair, and
writes every pair of the run to `pairs-audited/`: audited ones get `label_source=human` and
the human `strength`; where the human prefers the judge's rejected response the two sides are
swapped (so `margin`, the judges' gap, turns negative: margin-weighted losses should use
`strength` for human rows); a human tie keeps the order with strength 0. Agreement judge vs
human goes to the manifest's `audit` key.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from prefgen.curation.rebuild import vote_exclusions
from prefgen.data import storage
from prefgen.data.manifest import now, read_manifest, read_rows, write_manifest
from prefgen.data.schema import decode_pair, pairs_table, score_dict
from prefgen.pairing.strategies import judge_votes, routing_score

__all__ = ["CHOICES", "FORMATS", "export_audit", "merge_audit", "read_labels", "sample_for_audit"]

FORMATS = ("label-studio", "argilla")
QUESTION = "preference"
CHOICES = (
    "A is much better",
    "A is better",
    "A is slightly better",
    "About the same",
    "B is slightly better",
    "B is better",
    "B is much better",
)
_AB_STRENGTH = {label.lower(): i - 3 for i, label in enumerate(CHOICES)}
_AB_STRENGTH.update({"a": -2, "b": 2, "tie": 0, "same": 0})
ROUTING_BINS = (1 / 3, 2 / 3)  # low | mid | high routing score
LABEL_STUDIO_CONFIG = f"""<View>
  <Header value="Which response is better?"/>
  <Text name="prompt" value="$prompt"/>
  <Text name="response_a" value="$response_a"/>
  <Text name="response_b" value="$response_b"/>
  <Choices name="{QUESTION}" toName="prompt" choice="single" required="true">
{chr(10).join(f'    <Choice value="{c}"/>' for c in CHOICES)}
  </Choices>
</View>
"""


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def pair_routing(pair: dict, exclude: tuple[str, ...] = ()) -> float:
    """Routing score of a stored pair, with its reward-model margin when it has one
    (`exclude`: aggregate scores kept out of judge votes, `rebuild.vote_exclusions`)."""
    meta = pair.get("meta") or {}
    chosen = pair.get("chosen_scores") or meta.get("chosen_scores")
    rejected = pair.get("rejected_scores") or meta.get("rejected_scores")
    agreement, n_judges = judge_votes(score_dict(chosen), score_dict(rejected), exclude)
    return routing_score(pair.get("margin") or 0.0, agreement, n_judges, pair.get("rm_margin"))


def routing_bin(score: float) -> int:
    return sum(score >= edge for edge in ROUTING_BINS)


def sample_for_audit(
    pairs: list[dict], per_domain: int, seed: int = 0, exclude: tuple[str, ...] = ()
) -> list[dict]:
    """Stratified sample: per domain, `per_domain` pairs split evenly over routing bins (a
    bin with too few pairs hands its share to the others). Pure and order-independent."""
    strata: dict[str, dict[int, list[dict]]] = {}
    for pair in pairs:
        strata.setdefault(str(pair.get("domain")), {}).setdefault(
            routing_bin(pair_routing(pair, exclude)), []
        ).append(pair)
    picked: list[dict] = []
    for domain in sorted(strata):
        bins = {
            b: sorted(items, key=lambda p: _hash(seed, p["id"]))
            for b, items in strata[domain].items()
        }
        take = dict.fromkeys(bins, 0)
        left = min(per_domain, sum(len(v) for v in bins.values()))
        while left:  # round-robin allocation, highest bin first
            for b in sorted(bins, reverse=True):
                if left and take[b] < len(bins[b]):
                    take[b] += 1
                    left -= 1
        for b in sorted(bins, reverse=True):
            picked.extend(bins[b][: take[b]])
    return picked


def _render(messages: Any) -> str:
    messages = messages or []
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def to_item(pair: dict, seed: int, exclude: tuple[str, ...] = ()) -> dict:
    """Tool-neutral audit item: prompt and A/B responses in a seeded random order."""
    a_is_chosen = int(_hash(seed, "side", pair["id"])[:8], 16) % 2 == 0
    chosen, rejected = _render(pair["chosen"]), _render(pair["rejected"])
    return {
        "pair_id": pair["id"],
        "domain": pair.get("domain"),
        "routing_score": pair_routing(pair, exclude),
        "prompt": _render(pair["prompt"]),
        "response_a": chosen if a_is_chosen else rejected,
        "response_b": rejected if a_is_chosen else chosen,
        "a_is": "chosen" if a_is_chosen else "rejected",
    }


def to_label_studio(item: dict) -> dict:
    hidden = {k: item[k] for k in ("pair_id", "a_is", "domain", "routing_score")}
    return {
        "data": {
            "prompt": item["prompt"],
            "response_a": item["response_a"],
            "response_b": item["response_b"],
            "prefgen": hidden,  # not referenced by the labelling config, so never shown
        }
    }


def to_argilla(item: dict) -> dict:
    return {
        "id": item["pair_id"],
        "fields": {k: item[k] for k in ("prompt", "response_a", "response_b")},
        "metadata": {k: item[k] for k in ("pair_id", "a_is", "domain", "routing_score")},
        "suggestions": {},  # no judge suggestion: the audit is blind
        "responses": {},
        "vectors": {},
        "_server_id": None,
    }


def export_audit(
    url: str,
    per_domain: int,
    fmt: str,
    out: str,
    seed: int = 0,
    storage_options=None,
    label_source: str | None = None,
) -> dict:
    """Write the audit sample of the run's pairs (only those with `label_source`, if given:
    the loop audits what the judges labelled) to `out`; returns a summary."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown audit format {fmt!r}; known: {', '.join(FORMATS)}")
    manifest = _manifest(url, storage_options)
    pairs = [decode_pair(p) for p in read_rows(url, manifest, "pairs", storage_options)]
    if label_source is not None:
        pairs = [p for p in pairs if p.get("label_source") == label_source]
    exclude = vote_exclusions(manifest.get("config") or {})
    sample = sample_for_audit(pairs, per_domain, seed, exclude)
    items = [to_item(p, seed, exclude) for p in sample]
    convert = to_label_studio if fmt == "label-studio" else to_argilla
    fs, path = storage.filesystem(out, storage_options)
    storage.write_bytes_atomic(
        fs, path, json.dumps([convert(i) for i in items], ensure_ascii=False, indent=1).encode()
    )
    if fmt == "label-studio":
        storage.write_bytes_atomic(fs, path + ".label-config.xml", LABEL_STUDIO_CONFIG.encode())
    return {
        "items": len(items),
        "of_pairs": len(pairs),
        "per_domain": dict(Counter(i["domain"] for i in items)),
    }


def _manifest(url: str, storage_options) -> dict:
    manifest = read_manifest(url, storage_options)
    if manifest is None:
        raise FileNotFoundError(f"{url}: no manifest.json (not a finished prefgen run)")
    return manifest


# --- labels back in ---------------------------------------------------------------------------


def label_strength(label: Any) -> int | None:
    """A/B label -> signed strength in HelpSteer3's sense (< 0: A better); None if unknown."""
    if isinstance(label, dict):  # Label Studio JSON-MIN with several choices
        label = (label.get("choices") or [None])[0]
    if isinstance(label, bool):
        return None
    if isinstance(label, (int, float)) and -3 <= label <= 3:
        return int(label)
    if isinstance(label, str):
        return _AB_STRENGTH.get(label.strip().lower())
    return None


def _mapping(item: dict) -> dict | None:
    for place in (item.get("data"), item, item.get("metadata")):
        if isinstance(place, dict):
            hidden = place.get("prefgen")
            if isinstance(hidden, dict) and "a_is" in hidden:
                return hidden
            if "a_is" in place and "pair_id" in place:
                return place
    flat = {k.split(".", 1)[1]: v for k, v in item.items() if k.startswith("metadata.")}
    return flat if "a_is" in flat and "pair_id" in flat else None


def _raw_labels(item: dict) -> list:
    if isinstance(item.get("annotations"), list):  # Label Studio JSON export
        return [
            r.get("value", {}).get("choices", [None])[0]
            for a in item["annotations"]
            if not a.get("was_cancelled")
            for r in a.get("result") or []
            if r.get("from_name") == QUESTION
        ]
    if isinstance(item.get("responses"), dict):  # Argilla Record.to_dict()
        return [
            r.get("value")
            for r in item["responses"].get(QUESTION) or []
            if r.get("status") in (None, "submitted")  # drafts and discards do not count
        ]
    if f"{QUESTION}.responses" in item:  # Argilla flattened
        values = item[f"{QUESTION}.responses"] or []
        status = item.get(f"{QUESTION}.responses.status") or ["submitted"] * len(values)
        return [v for v, s in zip(values, status) if s in (None, "submitted")]
    return [item[QUESTION]] if QUESTION in item else []  # Label Studio JSON-MIN


def read_labels(items: list[dict]) -> tuple[dict[str, list[int]], int]:
    """Export items -> ({pair_id: human strengths oriented to chosen (> 0: chosen better)},
    number of items without a usable label). Pure."""
    labels: dict[str, list[int]] = {}
    unusable = 0
    for item in items:
        mapping = _mapping(item)
        values = [label_strength(v) for v in _raw_labels(item)]
        values = [v for v in values if v is not None]
        if mapping is None or not values:
            unusable += 1
            continue
        sign = -1 if mapping["a_is"] == "chosen" else 1  # HelpSteer3: < 0 means A is better
        labels.setdefault(str(mapping["pair_id"]), []).extend(sign * v for v in values)
    return labels, unusable


def apply_label(pair: dict, strengths: list[int], exclude: tuple[str, ...] = ()) -> dict:
    """One pair with its human verdict: mean strength over annotators, sides swapped when the
    human prefers the judge's rejected response. Pure."""
    mean = sum(strengths) / len(strengths)
    out = dict(pair, meta=dict(pair.get("meta") or {}))
    out["meta"]["human"] = {
        "labels": strengths,
        "mean": mean,
        "flipped": mean < 0,
        "routing_bin": routing_bin(pair_routing(pair, exclude)),  # as sampled, before a swap
    }
    out["meta"]["judge_strength"] = pair.get("strength")
    if mean < 0:
        for a, b in (
            ("chosen", "rejected"),
            ("chosen_score", "rejected_score"),
            ("chosen_model", "rejected_model"),
            ("chosen_scores", "rejected_scores"),
        ):
            out[a], out[b] = pair.get(b), pair.get(a)
        meta = out["meta"]
        for side in ("sample", "system_prompt", "scores"):
            meta[f"chosen_{side}"], meta[f"rejected_{side}"] = (
                meta.get(f"rejected_{side}"),
                meta.get(f"chosen_{side}"),
            )
        if pair.get("margin") is not None:
            out["margin"] = -pair["margin"]
        if pair.get("judge_agreement") is not None:
            out["judge_agreement"] = 1.0 - pair["judge_agreement"]
        meta["judge_strength"] = -(pair.get("strength") or 0)
    out["strength"] = int(abs(mean) + 0.5)  # after any swap chosen is the human's pick
    out["label_source"] = "human"
    return out


def agreement_stats(audited: list[dict], population: Counter) -> dict:
    """Judge-vs-human agreement over the labelled pairs: raw, without ties, per domain, per
    routing bin, and re-weighted by each (domain, routing bin)'s pair count in the run
    (`population`), which undoes the stratified sample's over-weighting of uncertain pairs.
    Pure."""

    def rate(rows: list[dict]) -> dict:
        agree = sum(1 for r in rows if r["meta"]["human"]["mean"] > 0)
        ties = sum(1 for r in rows if r["meta"]["human"]["mean"] == 0)
        return {
            "n": len(rows),
            "agree": agree,
            "ties": ties,
            "flipped": len(rows) - agree - ties,
            "agreement": agree / len(rows) if rows else None,
            "agreement_excluding_ties": agree / (len(rows) - ties) if len(rows) > ties else None,
        }

    def stratum(r: dict) -> tuple[str, int]:
        return str(r.get("domain")), r["meta"]["human"]["routing_bin"]

    strata: dict[tuple[str, int], list[dict]] = {}
    for r in audited:
        strata.setdefault(stratum(r), []).append(r)
    covered = sum(population[k] for k in strata)
    weighted = None
    if covered:
        weighted = sum(population[k] / covered * rate(v)["agreement"] for k, v in strata.items())
    domains = sorted({k[0] for k in strata})
    bins = sorted({k[1] for k in strata})
    return {
        **rate(audited),
        "agreement_weighted": weighted,
        "per_domain": {d: rate([r for r in audited if stratum(r)[0] == d]) for d in domains},
        "per_routing_bin": {str(b): rate([r for r in audited if stratum(r)[1] == b]) for b in bins},
    }


def _load_items(text: str) -> list[dict]:
    """A JSON list (both tools' JSON exports) or JSON lines."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def merge_audit(url: str, labels_file: str, storage_options=None) -> dict:
    """Merge a labels file into `pairs-audited/`; records and returns the manifest `audit`."""
    fs, path = storage.filesystem(labels_file, storage_options)
    with fs.open(path, "rb") as f:
        text = f.read().decode("utf-8")
    labels, unusable = read_labels(_load_items(text))
    manifest = _manifest(url, storage_options)
    out_fs, root = storage.filesystem(url, storage_options)
    exclude = vote_exclusions(manifest.get("config") or {})
    shards, audited, population, matched = [], [], Counter(), set()
    # One output shard per input shard: memory holds one shard's pairs at a time.
    for index, shard in enumerate(manifest["shards"]["pairs"]):
        view = {"shards": {"pairs": [shard]}}
        records = []
        for pair in map(decode_pair, read_rows(url, view, "pairs", storage_options)):
            population[(str(pair.get("domain")), routing_bin(pair_routing(pair, exclude)))] += 1
            if pair["id"] in labels:
                matched.add(pair["id"])
                pair = apply_label(pair, labels[pair["id"]], exclude)
                audited.append(pair)
            else:
                pair["label_source"] = pair.get("label_source") or "judge"
            meta = json.dumps(pair["meta"], ensure_ascii=False, default=str)
            records.append({**pair, "meta": meta})
        name = f"pairs-audited/part-{index:05d}.parquet"
        table = pairs_table(records)
        storage.write_parquet_atomic(out_fs, storage.join(root, name), table)
        shards.append({"path": name, "rows": len(records)})
    entry = {
        "id": _hash(labels_file, text)[:8],
        "created_at": now(),
        "labels_file": labels_file,
        "location": "pairs-audited",
        "unmatched_labels": len(set(labels) - matched),
        "unusable_items": unusable,
        **agreement_stats(audited, population),
        "shards": shards,
    }
    manifest = _manifest(url, storage_options)  # re-read just before writing: keep others' edits
    manifest["audit"] = entry
    write_manifest(out_fs, root, manifest)
    return entry
