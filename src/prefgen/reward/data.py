"""Preference pairs for reward-model training and evaluation, from any fsspec URL.

In: a prefgen run directory (only the shards its `manifest.json` lists), a Parquet or JSONL
file, a directory of them or a glob, on local disk or object storage. Rows may be prefgen's
own `pairs/` rows or any TRL preference format:

- explicit prompt: `prompt` (messages or a string) + `chosen`/`rejected` (messages or strings);
- implicit prompt, conversations: `chosen`/`rejected` are whole message lists; the prompt is
  their shared prefix and the response is what follows it (normally the last assistant turn);
- implicit prompt, plain text: `chosen`/`rejected` are whole texts (e.g. "Human: ... Assistant:
  ..."); the prompt is "" and the whole text is the response.

Out: one record per pair, `{id, group, prompt, chosen, rejected, margin, domain,
chosen_aspects, rejected_aspects}`: `prompt` is a message list or "", `chosen`/`rejected` are
response texts, `margin` the judge's score gap (or None), the aspects are the per-score dicts
prefgen's pairing stores in `meta` (or None). `group` keys the train/held-out split so that
pairs on the same prompt never land on both sides.

A row that cannot be read as a pair is counted by reason, not fatal: third-party files have
the odd empty or malformed row.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any

from prefgen.data import storage
from prefgen.data.manifest import read_manifest, shard_urls

SUFFIXES = (".parquet", ".jsonl", ".json")


def read_rows(url: str, storage_options: dict | None = None) -> list[dict]:
    """Every row of the pair files at `url` (run directory, file, directory or glob)."""
    options = storage.resolve_options(url, storage_options)
    manifest = None
    if not any(ch in url for ch in "*?["):
        try:
            manifest = read_manifest(url, options)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            manifest = None
    fs, _ = storage.filesystem(url, options)
    if manifest is not None:
        # A run directory: its manifest is the list of committed shards; never glob it.
        paths = [storage.filesystem(u, options)[1] for u in shard_urls(url, manifest, "pairs")]
    else:
        paths = storage.list_files(url, options, suffixes=SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no .parquet/.jsonl/.json files at {url}")
    rows: list[dict] = []
    for path in paths:
        rows.extend(_read_file(fs, path))
    return rows


def _read_file(fs, path: str) -> list[dict]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            return pq.read_table(f).to_pylist()
    with fs.open(path, "rb") as f:
        text = f.read().decode("utf-8")
    if path.endswith(".json") and text.lstrip().startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_pairs(
    url: str | list[str], storage_options: dict | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(normalized pair records, skipped rows counted by reason) from the files at `url` (or
    at each URL of a list: several runs, plus seed pairs in any TRL format)."""
    urls = [url] if isinstance(url, str) else url
    return normalize_rows([row for u in urls for row in read_rows(u, storage_options)])


def normalize_rows(rows: list[dict]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    records, skipped = [], Counter()
    for row in rows:
        try:
            records.append(normalize_pair(row))
        except ValueError as exc:
            skipped[str(exc)] += 1
    return records, dict(skipped)


def normalize_pair(row: dict) -> dict[str, Any]:
    """One row in any supported format -> a pair record; ValueError(reason) if it is not a pair."""
    if row.get("chosen") is None or row.get("rejected") is None:
        raise ValueError("missing chosen or rejected")
    prompt = _as_messages(row.get("prompt"), "prompt")
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise ValueError("chosen and rejected differ in format")
    if isinstance(chosen, str):
        chosen_text, rejected_text = chosen, rejected
    else:
        chosen = _as_messages(chosen, "chosen")
        rejected = _as_messages(rejected, "rejected")
        if not chosen or not rejected:
            raise ValueError("empty chosen or rejected")
        n = len(prompt)
        if n and chosen[:n] == prompt and rejected[:n] == prompt:
            # Explicit prompt repeated inside whole conversations: keep it once.
            chosen, rejected = chosen[n:] or chosen, rejected[n:] or rejected
        shared = _shared_prefix(chosen, rejected)
        prompt = prompt + chosen[:shared]
        chosen_text = _response_text(chosen[shared:])
        rejected_text = _response_text(rejected[shared:])
    if not chosen_text.strip() or not rejected_text.strip():
        raise ValueError("empty response")
    meta = _as_dict(row.get("meta"))
    record = {
        "prompt": prompt or "",
        "chosen": chosen_text,
        "rejected": rejected_text,
        "margin": _margin(row),
        "domain": str(row.get("domain") or ""),
        "chosen_aspects": _scores(meta.get("chosen_scores")),
        "rejected_aspects": _scores(meta.get("rejected_scores")),
    }
    record["id"] = str(row.get("id") or _digest(record["prompt"], chosen_text, rejected_text))
    record["group"] = str(row.get("prompt_id") or _group_key(record))
    return record


def _as_messages(value: Any, name: str) -> list[dict]:
    """Messages as [{role, content}]; a bare string is one user turn; None/"" is no messages."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list | tuple):
        out = []
        for m in value:
            if not isinstance(m, dict) or "content" not in m:
                raise ValueError(f"{name} is not a list of messages")
            out.append({"role": str(m.get("role") or "user"), "content": str(m["content"] or "")})
        return out
    raise ValueError(f"{name} is neither text nor messages")


def _shared_prefix(a: list[dict], b: list[dict]) -> int:
    """How many leading messages both conversations share, leaving at least one response turn."""
    n = 0
    limit = min(len(a), len(b)) - 1
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _response_text(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    # Conversations that diverge before their last turn: the whole divergent tail is the response.
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _as_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _margin(row: dict) -> float | None:
    margin = _number(row.get("margin"))
    if margin is not None:
        return margin
    for chosen_key, rejected_key in (
        ("chosen_score", "rejected_score"),
        ("score_chosen", "score_rejected"),  # UltraFeedback-binarized naming
    ):
        c, r = _number(row.get(chosen_key)), _number(row.get(rejected_key))
        if c is not None and r is not None:
            return c - r
    return None


def _scores(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    scores = {str(k): _number(v) for k, v in value.items()}
    scores = {k: v for k, v in scores.items() if v is not None}
    return scores or None


def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _group_key(record: dict) -> str:
    # Plain-text pairs have no prompt to group by; each pair is then its own group.
    return _digest(record["prompt"]) if record["prompt"] else record["id"]


def is_held_out(group: str, eval_fraction: float) -> bool:
    """Deterministic: the same group (prompt) always falls on the same side, on every machine."""
    bucket = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 2**32
    return bucket < eval_fraction


def split_pairs(
    records: list[dict], eval_fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) by hashing each record's group."""
    train, held_out = [], []
    for record in records:
        (held_out if is_held_out(record["group"], eval_fraction) else train).append(record)
    return train, held_out
