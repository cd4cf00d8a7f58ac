"""End to end on a real local Ray with the real bundled model: the quickstart, trimmed."""

from __future__ import annotations

import json

import pytest
from conftest import PROMPTS, QUICKSTART, tiny_overrides

from prefgen.data.manifest import read_manifest, read_rows, shard_urls
from prefgen.run.pipeline import OutputExists, run
from prefgen.run.registry import load_pipeline

pytestmark = pytest.mark.e2e

LIMIT = 6


def _input_ids(limit: int) -> list[str]:
    lines = PROMPTS.read_text().splitlines()[:limit]
    return [json.loads(line)["id"] for line in lines]


def _check_run(
    manifest: dict, pairs: list[dict], responses: list[dict], rejects: list[dict]
) -> None:
    cfg = manifest["config"]
    margin = cfg["pairing"]["min_margin"]
    assert pairs, (
        "the trimmed quickstart should yield at least one pair (math prompts have a verifier)"
    )
    for p in pairs:
        assert p["chosen_score"] - p["rejected_score"] >= margin
        assert p["margin"] == pytest.approx(p["chosen_score"] - p["rejected_score"])
        assert p["prompt"][-1]["role"] == "user"
        assert p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]
    # every prompt is accounted for: in pairs, or in rejects with a reason
    paired = {p["prompt_id"] for p in pairs}
    rejected = {r["id"] for r in rejects}
    assert paired | rejected == set(_input_ids(LIMIT))
    assert not paired & rejected
    assert all(r["reason"] for r in rejects)
    # every ok prompt got samples from every model, each response judged and aggregated
    models = {m["name"] for m in cfg["generate"]["models"]}
    by_prompt: dict[str, set] = {}
    for r in responses:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["model"])
        scores = dict(r["scores"])
        assert "coig_p" in scores and 1.0 <= scores["coig_p"] <= 10.0
        if r["domain"] == "math":
            assert scores["math"] in (0.0, 1.0)
        assert r["overall"] is not None
    assert all(v == models for v in by_prompt.values()) and len(by_prompt) == LIMIT
    counts = manifest["counts"]
    assert counts["pairs"] == len(pairs) and counts["responses"] == len(responses)
    assert counts["records_in"] == LIMIT
    assert set(counts["models"]) == models and all(
        m["tokens"] > 0 for m in counts["models"].values()
    )


def test_quickstart_trimmed_local(ray_session, tmp_path):
    out = tmp_path / "run"
    result = run(load_pipeline(QUICKSTART, tiny_overrides(out, LIMIT)))
    manifest = read_manifest(str(out))
    assert manifest == json.loads(json.dumps(result.manifest, default=str))
    pairs, responses, rejects = (
        read_rows(str(out), manifest, t) for t in ("pairs", "responses", "rejects")
    )
    _check_run(manifest, pairs, responses, rejects)
    assert manifest["config_hash"] and manifest["input"]["fingerprint"] and manifest["code_version"]

    # loads as-is with Hugging Face datasets, in TRL's conversational preference format
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=shard_urls(str(out), manifest, "pairs"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names) and len(ds) == len(pairs)

    # the same command again finds the run complete and returns it without redoing anything
    again = run(load_pipeline(QUICKSTART, tiny_overrides(out, LIMIT)))
    assert again.manifest == manifest
    # a different config never mixes with it, unless told to start over
    with pytest.raises(OutputExists, match="config hash"):
        run(load_pipeline(QUICKSTART, [*tiny_overrides(out, LIMIT), "generate.seed=1"]))


def test_quickstart_trimmed_on_s3(ray_session, s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("prefgen-test")
    fs.put(str(PROMPTS), "prefgen-test/prompts/quickstart.jsonl")
    out = "s3://prefgen-test/runs/qs"
    overrides = [*tiny_overrides(out, LIMIT), "input.path=s3://prefgen-test/prompts/"]
    run(load_pipeline(QUICKSTART, overrides))
    manifest = read_manifest(out)
    assert manifest is not None, "manifest.json must be committed on S3"
    assert fs.exists("prefgen-test/runs/qs/manifest.json")
    assert not [p for p in fs.find("prefgen-test/runs/qs") if "/.tmp" in p]
    pairs, responses, rejects = (
        read_rows(out, manifest, t) for t in ("pairs", "responses", "rejects")
    )
    _check_run(manifest, pairs, responses, rejects)
