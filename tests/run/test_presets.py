"""Every published-pipeline preset, end to end on a trimmed input with the bundled model.

Each test runs `pipelines/<preset>.yaml` as a user would (only trimmed: fewer prompts,
shorter answers) and asserts the property that defines its method, not just that it ran.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from prefgen.data.manifest import read_manifest, read_rows
from prefgen.data.schema import score_dict
from prefgen.run.registry import load_pipeline

pytestmark = pytest.mark.e2e

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _run(preset: str, tmp_path, *overrides: str) -> dict:
    from prefgen.run.pipeline import run

    out = str(tmp_path / preset)
    run(load_pipeline(PIPELINES / f"{preset}.yaml", [f"output.path={out}", *overrides]))
    manifest = read_manifest(out)
    tables = {t: read_rows(out, manifest, t) for t in ("pairs", "responses", "rejects")}
    assert tables["responses"], "no responses at all"
    return {"manifest": manifest, **tables}


def _scores(response: dict) -> dict[str, float]:
    return dict(response["scores"])


def _assert_paired_iff_margin(got: dict, margin: float) -> None:
    """A prompt has a pair iff two of its scorable responses' overall scores differ by more
    than `margin` (true of each preset's strategy): checked per prompt, so that a run with few
    or no pairs still shows why, and the loops over pairs below are not all there is."""
    overall: dict[str, list[float]] = {r["prompt_id"]: [] for r in got["responses"]}
    for r in got["responses"]:
        if r["overall"] is not None and r["text"].strip():
            overall[r["prompt_id"]].append(r["overall"])
    paired = {p["prompt_id"] for p in got["pairs"]}
    for pid, scores in overall.items():
        wide = len(scores) >= 2 and max(scores) - min(scores) > margin
        assert wide == (pid in paired), (pid, scores, margin)


def test_coig_p(ray_session, tmp_path):
    got = _run("coig-p", tmp_path, "limit=4", "generate.max_tokens=24")
    _assert_paired_iff_margin(got, 2.0)
    for r in got["responses"]:
        s = _scores(r)
        assert {"cp_point", "cp_list", "coig_p"} <= set(s), s
        assert 1.0 <= s["coig_p"] <= 10.0
        assert s["coig_p"] == pytest.approx((s["cp_point"] + s["cp_list"]) / 2)
        if s.get("math") == 0.0:  # hard rule: a wrong final answer scores at most 5
            assert s["cp_point"] <= 5.0 and s["cp_list"] <= 5.0
    for p in got["pairs"]:
        assert p["margin"] > 2.0, p["margin"]  # COIG-P's margin, on the 1-10 scale
    # the prompt-quality filter (COIG-P: below 5 of 10 is dropped) ran on every prompt
    for r in got["responses"]:
        assert json.loads(r["prompt_meta"])["prompt_quality"] >= 5.0
    low = [r for r in got["rejects"] if r["reason"].startswith("low_quality")]
    for r in low:
        score = float(r["reason"].split(":")[1].split("<")[0])
        assert score < 5.0
    # limit=4: each prompt was judged, then generated for or turned away as low quality
    assert len({r["prompt_id"] for r in got["responses"]}) + len(low) == 4
    counts = got["manifest"]["counts"]
    assert counts["pairs"] == len(got["pairs"])
    # the margin rule was exercised: either pairs passed it or prompts were turned away by it
    assert got["pairs"] or "margin_below_threshold" in counts["no_pair_by_reason"]


def test_ultrafeedback(ray_session, tmp_path):
    got = _run(
        "ultrafeedback",
        tmp_path,
        "input.sources.0.quota=2",  # per-source quotas, sampled, stratified by domain
        "input.sources.1.quota=1",
        "generate.max_tokens=16",
    )
    _assert_paired_iff_margin(got, 0.0)
    sources = Counter(json.loads(r["prompt_meta"])["source_name"] for r in got["responses"])
    assert sources == {"general": 2 * 2, "code": 1 * 2}  # 2 of the 3 models per prompt
    over = [r for r in got["rejects"] if r["reason"].startswith("over_quota")]
    assert len(over) == got["manifest"]["counts"]["records_in"] - 3
    aspects = {"instruction_following", "honesty", "truthfulness", "helpfulness"}
    by_prompt: dict[str, int] = {}
    for r in got["responses"]:
        s = _scores(r)
        assert {f"uf.{a}" for a in aspects} <= set(s), s
        assert all(1.0 <= s[f"uf.{a}"] <= 5.0 for a in aspects)
        assert 1.0 <= s["uf_critique"] <= 10.0
        by_prompt[r["prompt_id"]] = by_prompt.get(r["prompt_id"], 0) + 1
        shuffle = json.loads(r["prompt_meta"])["judges"]["uf"]["permutation"]
        assert sorted(shuffle) == list(range(len(shuffle)))  # the shuffle, recorded
    assert all(n == 2 for n in by_prompt.values())
    assert all(r["principle"] for r in got["responses"])  # each response drew a principle
    for p in got["pairs"]:
        assert p["strategy"] == "best_vs_random" and p["margin"] > 0


def test_helpsteer(ray_session, tmp_path):
    got = _run("helpsteer", tmp_path, "limit=3", "generate.max_tokens=16")
    _assert_paired_iff_margin(got, 0.1)
    attributes = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    for r in got["responses"]:
        s = _scores(r)
        assert all(0.0 <= s[f"hs.{a}"] <= 4.0 for a in attributes), s
        assert 1.0 <= s["safety"] <= 5.0  # the rubric the preset defines in its own YAML
    for p in got["pairs"]:
        assert 1 <= p["strength"] <= 3  # chosen is the better one: HelpSteer3's positive side
        assert score_dict(p["chosen_scores"]).keys() >= {f"hs.{a}" for a in attributes}


def test_code_plum(ray_session, tmp_path):
    got = _run("code-plum", tmp_path, "limit=3", "generate.max_tokens=64")
    _assert_paired_iff_margin(got, 0.0)
    for r in got["responses"]:
        assert dict(r["judge_status"])["tests"] == "ok", r["judge_status"]
        assert 0.0 <= _scores(r)["tests"] <= 1.0
        assert "code_uf.readability" in _scores(r)
    for p in got["pairs"]:  # PLUM: the chosen solution passes more tests
        assert score_dict(p["chosen_scores"])["tests"] > score_dict(p["rejected_scores"])["tests"]
    rates = {_scores(r)["tests"] for r in got["responses"]}
    print(f"code-plum: pass rates seen {sorted(rates)}, pairs {len(got['pairs'])}")


def test_cdr(ray_session, tmp_path):
    got = _run("cdr", tmp_path, "limit=3", "generate.max_tokens=16")
    _assert_paired_iff_margin(got, 0.0)
    for r in got["responses"]:
        assert dict(r["judge_status"])["cdr"] == "ok"
        assert r["overall"] is not None
    for p in got["pairs"]:
        assert score_dict(p["chosen_scores"])["cdr"] > score_dict(p["rejected_scores"])["cdr"]
    assert got["pairs"], "two different responses almost never tie on a log-probability ratio"
