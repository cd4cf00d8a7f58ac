"""Prompt mixtures: several named sources, per-source quotas, seeded (optionally stratified) samples.

UltraFeedback drew its 64k instructions from six sources with a quota each (all of TruthfulQA
and FalseQA, 10k of Evol-Instruct, 20k of ShareGPT, FLAN stratified by subset; docs/research.md
"UltraFeedback: prompts, models and principles"). Here `input.sources` names each source (a path under `input.path`), its quota and an
optional default domain; `read_prompts` streams on the driver, while shards are written:

    files of every source, in config order -> ingest.ingest (parse, exact dedup across sources)
      -> tag meta.source_name (+ the source's domain where a prompt names none)
      -> [keyword domain tags, when ingest.domain_tagger is on without a model]
    once every row was seen (`QuotaSample`, applied to the written shards by run.pipeline):
      -> per-source quota: a seeded sample, stratified by domain when ingest.stratify_by: domain

The sample is a hash ranking (`stable_hash(seed, source, prompt id)`), not "the first N": it does
not depend on file order or on the machine, and a larger quota keeps every prompt a smaller
one kept. Prompts left out are rejected (stage `ingest`, reason `over_quota: ...`), so every
input record still ends in `pairs/` or `rejects/`. Quotas are upper bounds: prompts that later
stages reject (near-duplicates, low quality) are not replaced.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from prefgen.config import INPUT_SUFFIXES, PipelineConfig, SourceConfig
from prefgen.data import storage
from prefgen.data.rows import is_ok, stable_hash
from prefgen.ingest.records import DEFAULT_DOMAIN, ingest

__all__ = [
    "QuotaSample",
    "allocate",
    "path_replaces_sources",
    "read_prompts",
    "source_files",
    "source_size",
    "tag_source",
]


def read_prompts(cfg: PipelineConfig, in_fs, paths: list[str]) -> Iterator[dict[str, Any]]:
    """Every input record as a row (rejects included), in input order, one at a time: the
    driver's ingest, before quotas (`QuotaSample` decides those once every row was seen).

    `paths` are the files at `input.path` (what the run fingerprints); with `input.sources`
    each source lists its own files under that root instead.
    """
    ing = cfg.ingest
    sources = list(cfg.input.sources)
    owner: dict[str, SourceConfig] = {}
    if sources:
        listed = source_files(
            cfg.input.path, sources, cfg.input.storage_options, INPUT_SUFFIXES[cfg.input.format]
        )
        paths = [path for _, files in listed for path in files]
        owner = {path: source for source, files in listed for path in files}
    keywords = ing.domain_tagger.enabled and ing.domain_tagger.model is None
    if keywords:
        from prefgen.ingest.prompt_stages import tag_domains_by_keyword
    rows = ingest(
        _open_each(in_fs, paths),
        cfg.input.format,
        ing.max_prompt_chars,
        ing.dedup,
        cfg.limit,
        cfg.judge.code_verifier.tests_field,
    )
    for row in rows:
        if sources:
            tag_source(row, owner)
        if keywords:
            tag_domains_by_keyword([row], ing.domain_tagger.labels)
        yield row


def _open_each(fs, paths: list[str]) -> Iterator[tuple[str, BinaryIO]]:
    """Each file open while ingest reads it (a piece at a time), closed before the next."""
    for path in paths:
        with fs.open(path, "rb") as file:
            yield path, file


def source_files(
    root: str, sources: list[SourceConfig], storage_options: dict, suffixes: tuple[str, ...]
) -> list[tuple[SourceConfig, list[str]]]:
    """Each source's files (sorted) under `root`; a file claimed by two sources is an error."""
    listed = []
    claimed: dict[str, str] = {}
    for i, source in enumerate(sources):
        url = storage.join(root, source.path)
        try:
            files = storage.list_files(url, storage_options, suffixes)
        except FileNotFoundError:
            files = []
        if not files:
            raise FileNotFoundError(
                f"input.sources.{i}.path: no {'/'.join(suffixes)} files at {url}"
            )
        for path in files:
            other = claimed.setdefault(path, source.name)
            if other != source.name:
                raise ValueError(
                    f"input.sources.{i}.path: {path} belongs to sources {other!r} and "
                    f"{source.name!r}; give each file to one source"
                )
        listed.append((source, files))
    return listed


def tag_source(row: dict[str, Any], owner: dict[str, SourceConfig]) -> None:
    """`source_name` on a row (rejects too, for accounting); the source's domain on a valid
    prompt that names none (domain `general`)."""
    source = owner.get(row["source"])
    if source is None:
        return
    row["source_name"] = source.name
    if is_ok(row) and source.domain and row["domain"] == DEFAULT_DOMAIN:
        row["domain"] = source.domain


def source_size(available: int, quota: int | None, weight: float | None) -> int:
    """How many of a source's `available` valid prompts to keep: the smaller of quota and share."""
    keep = available
    if quota is not None:
        keep = min(keep, quota)
    if weight is not None:
        keep = min(keep, int(round(weight * available)))
    return max(0, keep)


def allocate(counts: dict[str, int], total: int, mode: str = "proportional") -> dict[str, int]:
    """Split `total` picks across strata holding `counts` prompts; never more than a stratum has.

    * proportional: largest remainder on total * count / sum, so the mix is kept (ties: name);
    * equal: water-filling, each stratum gets an equal share and strata smaller than their
      share are kept whole, their unused share going to the others (COIG-P found mixed
      domains beat any single one).
    """
    total = min(total, sum(counts.values()))
    if total <= 0 or not counts:
        return {name: 0 for name in counts}
    names = sorted(counts)
    if mode == "proportional":
        size = sum(counts.values())
        exact = {name: total * counts[name] / size for name in names}
        picks = {name: int(exact[name]) for name in names}
        left = total - sum(picks.values())
        by_remainder = sorted(names, key=lambda name: (-(exact[name] - picks[name]), name))
        for name in by_remainder[:left]:
            picks[name] += 1
        return picks
    if mode != "equal":
        raise ValueError(f"unknown allocation {mode!r}: proportional | equal")
    picks, pending, left = {}, list(names), total
    while pending:
        share = left // len(pending)
        small = [name for name in pending if counts[name] <= share]
        if not small:
            extra = left - share * len(pending)  # < len(pending); each pending has > share
            for k, name in enumerate(pending):
                picks[name] = share + (1 if k < extra else 0)
            break
        for name in small:
            picks[name] = counts[name]
            left -= counts[name]
        pending = [name for name in pending if name not in small]
    return picks


class QuotaSample:
    """Per-source quotas (seeded, optionally stratified samples), decided once every row is seen.

    `add(position, row)` notes each valid row of a source with a quota; `rejects()` returns
    the positions left out, grouped by their `over_quota: ...` reason. Within a stratum the prompts
    with the lowest `stable_hash(seed, source, id)` are kept: deterministic and independent of
    input order. It holds 16 bytes a noted row (its rank and position), never the rows.
    """

    def __init__(
        self,
        sources: list[SourceConfig],
        seed: int,
        stratify_by: str | None = None,
        allocation: str = "proportional",
    ):
        self.sources, self.seed = sources, seed
        self.stratify_by, self.allocation = stratify_by, allocation
        self._limited = {s.name for s in sources if s.quota is not None or s.weight is not None}
        # source -> stratum -> (ranks, positions)
        self._strata: dict[str, dict[str, tuple[array, array]]] = defaultdict(dict)

    def add(self, position: int, row: dict[str, Any]) -> None:
        name = row.get("source_name")
        if name not in self._limited or not is_ok(row):
            return
        stratum = row["domain"] if self.stratify_by == "domain" else ""
        ranks, positions = self._strata[name].setdefault(stratum, (array("Q"), array("q")))
        ranks.append(int(stable_hash(self.seed, name, row["id"]), 16))
        positions.append(position)

    def rejects(self) -> list[tuple[np.ndarray, str]]:
        out: list[tuple[np.ndarray, str]] = []
        for source in self.sources:
            strata = self._strata.get(source.name, {})
            counts = {name: len(ranks) for name, (ranks, _) in strata.items()}
            available = sum(counts.values())
            keep = source_size(available, source.quota, source.weight)
            if keep == available:
                continue
            mode = self.allocation if self.stratify_by else "proportional"
            picks = allocate(counts, keep, mode)
            for stratum, (ranks, positions) in strata.items():
                order = np.argsort(np.frombuffer(ranks, dtype=np.uint64), kind="stable")
                reason = f"over_quota: source {source.name!r} keeps {keep} of {available}"
                if self.stratify_by:
                    reason += f", domain {stratum!r} keeps {picks[stratum]} of {counts[stratum]}"
                left_out = np.frombuffer(positions, dtype=np.int64)[order[picks[stratum] :]]
                out.append((left_out, reason))
        return out


def path_replaces_sources(
    cfg: PipelineConfig, overrides: list[str]
) -> tuple[list[str], str] | None:
    """When `input.path=...` on the command line meant "my prompts": the overrides that make
    that path the run's only input, and a note saying what they drop; else None.

    A preset's `input.sources` are paths under `input.path`, so `prefgen run PRESET
    input.path=my.jsonl` would look for `my.jsonl/<source path>`. What the user meant is their
    file: when no source has files under the new path (a file, or a directory without the
    sources' relative paths), the sources (their quotas, weights and domains) and the
    stratification that needs them are dropped. Untouched: configs without sources, sources
    found under the new path (a copy of the preset's data), any `input.sources...` override
    (the user is steering the sources), and a path with only some of the sources (the usual
    error then names the missing `input.sources.N.path`).
    """
    keys = [o.partition("=")[0].strip() for o in overrides]
    if not cfg.input.sources or "input.path" not in keys:
        return None
    if any(k == "input.sources" or k.startswith("input.sources.") for k in keys):
        return None
    for source in cfg.input.sources:
        url = storage.join(cfg.input.path, source.path)
        try:
            found = storage.list_files(
                url, cfg.input.storage_options, INPUT_SUFFIXES[cfg.input.format]
            )
        except (FileNotFoundError, NotADirectoryError):
            found = []
        if found:
            return None
    extra = ["input.sources=[]"]
    if cfg.ingest.stratify_by:
        extra.append("ingest.stratify_by=null")
    dropped = ", ".join(_describe_source(s) for s in cfg.input.sources)
    note = (
        f"note: input.path={cfg.input.path} holds none of the config's input.sources, so it "
        f"is read as the only input: every prompt there, no mixture (dropped: {dropped}"
        f"{'; ingest.stratify_by' if cfg.ingest.stratify_by else ''}). To keep the quotas, "
        "set input.path to a directory and input.sources.N.path to each file under it."
    )
    return extra, note


def _describe_source(source: SourceConfig) -> str:
    limits = [
        f"{name} {value}"
        for name, value in (
            ("quota", source.quota),
            ("weight", source.weight),
            ("domain", source.domain),
        )
        if value is not None
    ]
    return f"{source.name} ({', '.join(limits) or 'all'})"
