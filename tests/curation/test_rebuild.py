"""rebuild-pairs: pairs re-derived from a hand-built run's responses/, quotas, RM carry-over,
the manifest's `rebuilds` entry and the CLI."""

from __future__ import annotations

import itertools
import json

import pytest
from run_builder import JUDGE, make_run

from prefgen.cli import main
from prefgen.curation.rebuild import (
    apply_domain_quotas,
    entry_manifest,
    rebuild_pairs,
    resolve_options,
    vote_exclusions,
)
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.data.schema import score_dict
from prefgen.pairing.strategies import length_ratio


@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path / "run")


def _decoded(rows):
    for row in rows:
        row["meta"] = json.loads(row["meta"])
        for key in ("chosen_scores", "rejected_scores"):
            row[key] = score_dict(row[key])
    return rows


def _all_pairs_by_hand(responses, min_margin):
    """all_pairs by its definition: every two responses of a prompt whose overall scores differ
    by more than the margin, the higher one chosen (independent of prefgen.pairing)."""
    by_prompt = {}
    for r in responses:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    pairs = []
    for pid, group in by_prompt.items():
        for a, b in itertools.combinations(group, 2):
            hi, lo = (a, b) if a["overall"] > b["overall"] else (b, a)
            if hi["overall"] - lo["overall"] > min_margin:
                pairs.append((pid, hi["text"], lo["text"], hi["overall"], lo["overall"]))
    return sorted(pairs)


def _as_tuples(pairs):
    return sorted(
        (p["prompt_id"], p["chosen"][0]["content"], p["rejected"][0]["content"],
         p["chosen_score"], p["rejected_score"])
        for p in pairs
    )  # fmt: skip


def test_rebuild_matches_the_strategy_and_records_the_manifest_entry(run):
    url = run["url"]
    before = read_manifest(url)
    entry = rebuild_pairs(url, {"strategy": "all_pairs", "min_margin": 0.5})
    rebuilt = _decoded(read_rows(url, entry_manifest(entry), "pairs"))
    expected = _all_pairs_by_hand(run["responses"], 0.5)
    assert len(rebuilt) == len(expected) == entry["counts"]["pairs"] > len(run["pairs"])
    assert _as_tuples(rebuilt) == expected
    assert all(p["strategy"] == "all_pairs" for p in rebuilt)
    assert all(p["judge"] == JUDGE and p["label_source"] == "judge" for p in rebuilt)
    # Unset knobs come from the run's own pairing config.
    assert entry["options"]["seed"] == 0 and entry["options"]["min_chosen_score"] is None
    assert entry["location"] == f"pairs-rebuilt-{entry['id']}"
    assert all(s["path"].startswith(entry["location"] + "/") for s in entry["shards"])
    after = read_manifest(url)
    assert after["shards"] == before["shards"]  # the original pairs list is untouched
    assert after["rebuilds"] == [entry]
    # Same options again: same id, entry replaced rather than duplicated.
    again = rebuild_pairs(url, {"strategy": "all_pairs", "min_margin": 0.5})
    assert again["id"] == entry["id"] and len(read_manifest(url)["rebuilds"]) == 1


def test_strategy_and_knobs_change_the_result(run):
    url = run["url"]
    worst = rebuild_pairs(url, {"strategy": "best_vs_worst"})
    every = rebuild_pairs(url, {"strategy": "all_pairs"})
    short = rebuild_pairs(url, {"strategy": "all_pairs", "max_length_ratio": 2.0})
    counts = [e["counts"]["pairs"] for e in (worst, every, short)]
    assert counts[0] < counts[1] and 0 < counts[2] < counts[1]
    assert len({worst["id"], every["id"], short["id"]}) == 3
    ids = lambda e: {p["id"] for p in read_rows(url, entry_manifest(e), "pairs")}  # noqa: E731
    assert ids(worst) < ids(every) and ids(short) < ids(every)
    # best_vs_worst with the run's config reproduces the run's pairs (before the RM filter).
    dropped = {r["id"] for r in run["rejects"] if r["stage"] == "filter"}
    assert ids(worst) == {p["id"] for p in run["pairs"]} | dropped
    for p in read_rows(url, entry_manifest(short), "pairs"):
        assert length_ratio(p["chosen"][0]["content"], p["rejected"][0]["content"]) <= 2.0
    assert len(read_manifest(url)["rebuilds"]) == 3


def test_rm_margins_carried_over_and_filtered(run):
    url = run["url"]
    entry = rebuild_pairs(url, {"strategy": "best_vs_worst", "min_rm_margin": 0.0})
    rebuilt = read_rows(url, entry_manifest(entry), "pairs")
    dropped = [r for r in run["rejects"] if r["stage"] == "filter"]
    assert dropped and entry["counts"]["dropped_by_rm"] == len(dropped)
    kept_rm = {p["id"]: p["rm_margin"] for p in run["pairs"] if p.get("rm_margin") is not None}
    assert kept_rm and {p["id"]: p["rm_margin"] for p in rebuilt if p["rm_margin"]} == kept_rm
    assert len(rebuilt) == len(run["pairs"])


def test_domain_quotas_pure():
    pairs = [
        {"id": f"{d}{p}{k}", "domain": d, "prompt_id": f"{d}{p}"}
        for d in ("math", "chat")
        for p in range(3)
        for k in range(3)
    ]
    kept, dropped = apply_domain_quotas(pairs, {"math": 4, "code": 1}, seed=0)
    math = [p for p in kept if p["domain"] == "math"]
    assert len(math) == 4 and dropped == {"math": 5}
    assert len({p["prompt_id"] for p in math}) == 3  # round-robin over prompts first
    assert sorted(p["id"][-1] for p in math) == ["0", "0", "0", "1"]  # each prompt's best first
    assert sum(1 for p in kept if p["domain"] == "chat") == 9  # no quota: kept whole
    assert kept == [p for p in pairs if p in kept]  # input order kept
    assert apply_domain_quotas(pairs, {"math": 4}, seed=0) == (kept, dropped)
    assert apply_domain_quotas(pairs, {"math": 0}, seed=0)[1] == {"math": 9}


def test_quota_in_rebuild_and_out_dir_is_a_readable_run(run, tmp_path):
    url = run["url"]
    out = str(tmp_path / "derived")
    entry = rebuild_pairs(url, {"strategy": "all_pairs", "domain_quotas": {"math": 3}}, out=out)
    derived = read_manifest(out)
    rows = read_rows(out, derived, "pairs")
    assert len(rows) == entry["counts"]["pairs"] == derived["counts"]["pairs"]
    assert sum(1 for p in rows if p["domain"] == "math") == 3
    assert entry["counts"]["dropped_by_quota"]["math"] > 0
    assert derived["derived_from"] == url and read_manifest(url)["rebuilds"][0]["location"] == out


def test_vote_exclusions_from_the_run_config():
    assert vote_exclusions({"judge": {"ensemble": {"name": "ens", "members": ["a", "b"]}}}) == (
        "ens",
    )
    assert vote_exclusions({"judge": {"ensemble": {"name": "ens", "members": []}}}) == ()
    assert vote_exclusions({}) == ()


def test_resolve_options_requires_a_strategy():
    assert resolve_options({"strategy": "all_pairs", "seed": 3}, {})["seed"] == 3
    with pytest.raises(ValueError, match="strategy"):
        resolve_options({}, {})


def test_cli_rebuild_pairs(run, capsys):
    code = main(
        ["rebuild-pairs", run["url"], "--strategy", "random_with_margin", "--min-margin", "1",
         "--domain-quota", "math=2", "--domain-quota", "code=1", "--max-length-ratio", "5"]
    )  # fmt: skip
    assert code == 0
    entry = read_manifest(run["url"])["rebuilds"][0]
    assert entry["options"]["domain_quotas"] == {"math": 2, "code": 1}
    assert entry["options"]["max_length_ratio"] == 5.0
    assert f"{entry['counts']['pairs']} pairs" in capsys.readouterr().out
    assert main(["rebuild-pairs", run["url"] + "-missing", "--strategy", "all_pairs"]) == 2
    with pytest.raises(SystemExit):
        main(["rebuild-pairs", run["url"], "--strategy", "all_pairs", "--domain-quota", "math"])
