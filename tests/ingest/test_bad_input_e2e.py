"""Bad input end to end on a real local Ray: every bad record lands in rejects/, nothing crashes.

The pipeline runs once per module on the bad-input corpus (tests/fixtures/bad_prompts.jsonl,
bad_prompts.parquet and bad_prompts_binary.parquet; make_bad_prompts.py and make_bad_parquet.py
say what each line or row is) with the quickstart's three generators, tiny answers and no LLM
judge (the math verifier still scores). Records are keyed by (file name, index). The CLI tests
at the bottom need no Ray.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml

from prefgen.cli import main
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.ingest.records import parse_record, read_records
from prefgen.run.registry import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
DATA = ROOT / "tests" / "fixtures"
BAD_PROMPTS = DATA / "bad_prompts.jsonl"
JSONL = BAD_PROMPTS.name


def read_json_file(path: Path):
    return json.loads(path.read_text())


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, DATA / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load("make_bad_prompts")
PARQUET = _load("make_bad_parquet")
FILES = [JSONL, *PARQUET.FILES]  # the input glob lists them in this (sorted) order
EXPECTED = {(JSONL, i): want for i, (want, _) in enumerate(GEN.CASES) if want != GEN.SKIP}
for _name in PARQUET.FILES:
    EXPECTED.update({(_name, i): want for i, want in enumerate(PARQUET.expected(_name))})
GOOD = sorted(key for key, want in EXPECTED.items() if want == GEN.OK)
BAD = {key: want for key, want in EXPECTED.items() if want != GEN.OK}


DUP = [i for (f, i), want in BAD.items() if want == "duplicate"][0]
ORIGINAL = 0  # the line DUP repeats (make_bad_prompts.py)


def _key(row: dict) -> tuple[str, int]:
    return Path(row["source"]).name, row["index"]


def _parsed_ids() -> dict[tuple[str, int], str]:
    """(file, index) -> prompt id of every record that parses (duplicates included), without Ray."""
    ids = {}
    for name in FILES:
        rows = read_records((DATA / name).read_bytes(), str(DATA / name), "auto")
        ids.update({_key(r): r["id"] for r in (parse_record(r, 2000) for r in rows) if r["id"]})
    return ids


def _dedup_loser(rejects: list[dict]) -> int:
    """Which copy of the duplicated prompt was dropped: always the later line (input order wins)."""
    (dup,) = [r for r in rejects if r["reason"].startswith("duplicate:")]
    assert _key(dup) == (JSONL, DUP), dup
    return dup["index"]


def _expected_ingest(rejects: list[dict]) -> dict[tuple[str, int], str]:
    expected = {key: want for key, want in BAD.items() if want != "duplicate"}
    expected[(JSONL, _dedup_loser(rejects))] = "duplicate"
    return expected


def _good_ids(rejects: list[dict]) -> dict[tuple[str, int], str]:
    """(file, index) -> id of the prompts that should reach generation."""
    ids = _parsed_ids()
    loser = (JSONL, _dedup_loser(rejects))
    return {key: ids[key] for key in [*GOOD, (JSONL, DUP)] if key != loser}


@pytest.fixture(scope="module")
def bad_run(ray_session, tmp_path_factory):
    from prefgen.run.pipeline import run

    tmp = tmp_path_factory.mktemp("bad_input")
    # `judge.llm=[]` works as an override, but dict overrides merge, so the quickstart's
    # `weights: {coig_p: 1.0, ...}` cannot lose coig_p from the command line: edit a copy.
    data = yaml.safe_load(QUICKSTART.read_text())
    data["judge"]["weights"] = {"math": 1.0}
    cfg_path = tmp / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp / "run"
    cfg = load_pipeline(
        cfg_path,
        [
            f"input.path={DATA}/bad_prompts*",  # the JSONL and both Parquet files
            f"output.path={out}",
            "ingest.max_prompt_chars=2000",
            "generate.max_tokens=8",
            "generate.models.2.max_tokens=8",
            "judge.llm=[]",
            "execution.shard_rows=8",
        ],
    )
    assert cfg.judge.llm == []
    t0 = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - t0
    manifest = read_manifest(str(out))
    tables = {t: read_rows(str(out), manifest, t) for t in ("pairs", "responses", "rejects")}
    return SimpleNamespace(out=out, result=result, manifest=manifest, seconds=seconds, **tables)


@pytest.mark.e2e
def test_run_finishes_and_commits(bad_run):
    assert bad_run.manifest is not None, "no manifest.json: the run did not commit"
    assert bad_run.manifest["counts"] == bad_run.result.manifest["counts"]
    assert bad_run.manifest["input"]["files"] and bad_run.manifest["config"]["judge"]["llm"] == []
    print(f"bad-input run: {bad_run.seconds:.1f}s")


@pytest.mark.e2e
def test_every_bad_line_is_rejected_at_ingest(bad_run):
    expected = _expected_ingest(bad_run.rejects)
    ingest = [r for r in bad_run.rejects if r["stage"] == "ingest"]
    by_key = Counter(_key(r) for r in ingest)
    assert all(n == 1 for n in by_key.values()), by_key
    assert set(by_key) == set(expected), "ingest rejects are exactly the bad records"
    for r in ingest:
        want = expected[_key(r)]
        assert r["raw"] or want == "unreadable_parquet", r  # nothing of those could be read
        if want == "too_long":
            continue  # see test_too_long_line_reason
        assert r["reason"].startswith(want), (_key(r), want, r["reason"])
    assert {f for f, _ in by_key} == set(FILES)


@pytest.mark.e2e
def test_duplicate_points_at_the_other_copy(bad_run):
    loser = _dedup_loser(bad_run.rejects)
    winner = DUP if loser == ORIGINAL else ORIGINAL
    (dup,) = [r for r in bad_run.rejects if _key(r) == (JSONL, loser)]
    assert dup["reason"].startswith("duplicate")
    assert dup["reason"].endswith(f"bad_prompts.jsonl#{winner}"), dup["reason"]
    assert dup["id"] == _parsed_ids()[(JSONL, loser)]
    print(f"dedup kept line {winner}, dropped line {loser}")


@pytest.mark.e2e
def test_too_long_line_reason(bad_run):
    (key,) = [key for key, want in BAD.items() if want == "too_long"]
    (row,) = [r for r in bad_run.rejects if _key(r) == key]
    assert row["reason"].startswith("too_long"), row["reason"]
    assert len(row["raw"]) <= 2000  # the rejects table keeps a preview, not the whole record


@pytest.mark.e2e
def test_blank_line_is_skipped_not_rejected(bad_run):
    blank = [(JSONL, i) for i, (want, _) in enumerate(GEN.CASES) if want == GEN.SKIP]
    assert blank and not {_key(r) for r in bad_run.rejects} & set(blank)


@pytest.mark.e2e
def test_every_good_row_is_accounted_for(bad_run):
    ids = _good_ids(bad_run.rejects)
    paired = {p["prompt_id"] for p in bad_run.pairs}
    no_pair = {r["id"]: r for r in bad_run.rejects if r["stage"] == "pair"}
    assert not paired & set(no_pair)
    assert paired | set(no_pair) == set(ids.values())
    for key, pid in ids.items():
        if pid in no_pair:
            assert _key(no_pair[pid]) == key
            assert no_pair[pid]["reason"].startswith("no_pair"), no_pair[pid]["reason"]
    # every good prompt, and only those, got one response from each of the three models
    models = {m["name"] for m in bad_run.manifest["config"]["generate"]["models"]}
    got: dict[str, list] = {}
    for r in bad_run.responses:
        got.setdefault(r["prompt_id"], []).append(r["model"])
    assert set(got) == set(ids.values())
    assert all(sorted(v) == sorted(models) for v in got.values()), got
    margin = bad_run.manifest["config"]["pairing"]["min_margin"]
    assert bad_run.pairs, "no pair at all: the loop below would check nothing"
    for p in bad_run.pairs:
        assert p["chosen_score"] - p["rejected_score"] >= margin
        assert p["judge"] == "math"


@pytest.mark.e2e
def test_odd_but_valid_values_arrive_unchanged(bad_run):
    """What ingest keeps on purpose reaches the outputs as the input gave it."""
    by_id = {r["prompt_id"]: r for r in bad_run.responses}
    ids = _parsed_ids()
    # a reference past int64, given as a JSON number: its exact digits
    (big,) = [
        i for i, (want, line) in enumerate(GEN.CASES) if want == GEN.OK and b"2 to the" in line
    ]
    assert by_id[ids[(JSONL, big)]]["reference"] == "1267650600228229401496703205376"
    # an escaped NUL stays in the prompt the models saw
    (nul,) = [i for i, (want, line) in enumerate(GEN.CASES) if want == GEN.OK and b"u0000" in line]
    assert "5 + 6?\x00 Give" in by_id[ids[(JSONL, nul)]]["prompt"][-1]["content"]
    # Parquet meta of Arrow types: ISO timestamps, exact decimals, map entries as pairs
    meta = json.loads(by_id["pq-add"]["prompt_meta"])
    assert meta["created"] == "2024-05-01T12:30:00+00:00"
    assert meta["price"] == "1.50"
    assert meta["tags"] == [["level", 1]]
    assert meta["info"] == {"source": "unit", "grade": 3}
    assert by_id["pq-add"]["reference"] == "13"


@pytest.mark.e2e
def test_manifest_counts_match_the_tables(bad_run):
    counts = bad_run.manifest["counts"]
    non_blank = [line for line in BAD_PROMPTS.read_bytes().split(b"\n") if line.strip()]
    parquet_rows = sum(len(PARQUET.expected(name)) for name in PARQUET.FILES)
    assert counts["records_in"] == len(non_blank) + parquet_rows == len(EXPECTED)
    assert counts["prompts_ok"] == len(GOOD)  # one copy of the duplicate is ok
    ingest = [r for r in bad_run.rejects if r["stage"] != "pair"]
    assert counts["rejected_by_reason"] == dict(Counter(r["reason"].split(":")[0] for r in ingest))
    no_pair = [
        r["reason"].removeprefix("no_pair: ") for r in bad_run.rejects if r["stage"] == "pair"
    ]
    assert counts["no_pair_by_reason"] == dict(Counter(no_pair))
    assert counts["pairs"] == len(bad_run.pairs)
    assert counts["responses"] == len(bad_run.responses) == 3 * len(GOOD)
    shard_rows = sum(s["rows"] for s in bad_run.manifest["shards"]["rejects"])
    assert shard_rows == len(bad_run.rejects)
    # the rejects directory holds exactly the shards the manifest lists
    assert pq.read_table(bad_run.out / "rejects").num_rows == len(bad_run.rejects)
    # and one marker per committed shard: the plan's shards, all of them
    plan = read_json_file(bad_run.out / "_work" / "plan.json")
    assert len(bad_run.manifest["shards"]["rejects"]) == len(plan["rows"])
    assert sum(plan["rows"].values()) == counts["records_in"]


# ---------------------------------------------------------------- CLI, no Ray


def test_cli_bad_override_exits_2(capsys):
    assert main(["run", str(QUICKSTART), "generate.max_tokens=abc"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "generate.max_tokens" in err and "command-line override" in err


def test_cli_bad_config_file_exits_2(tmp_path, capsys):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["pairing"]["stratgy"] = "all_pairs"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pairing.stratgy" in err and str(path) in err
