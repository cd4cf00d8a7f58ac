"""The closing loop on loopback: train a reward model -> serve it -> call every endpoint ->
a pipeline whose filter stage calls the served endpoint and drops the pairs it calls inverted."""

from __future__ import annotations

import json
import math

import pytest
import requests
from conftest import PROMPTS, QUICKSTART, free_port, tiny_overrides
from reward.topic_pairs import topic_pair_rows, write_pairs

from prefgen.data.manifest import read_manifest, read_rows
from prefgen.run.pipeline import run
from prefgen.run.registry import load_pipeline

pytestmark = pytest.mark.e2e

LIMIT = 6
# Keep the reservations under the test Ray's 2 CPUs with a Serve replica running beside the pipeline.
SMALL = [f"generate.models.{i}.num_cpus=0.25" for i in range(3)] + [
    "judge.llm.0.model.num_cpus=0.25"
]


def _input_ids(limit: int) -> list[str]:
    return [json.loads(line)["id"] for line in PROMPTS.read_text().splitlines()[:limit]]


@pytest.fixture(scope="module")
def endpoint(ray_session, tmp_path_factory):
    from ray import serve
    from ray.serve.config import HTTPOptions

    from prefgen.reward.train import load_reward_config, train
    from prefgen.serve.app import build_app

    root = tmp_path_factory.mktemp("loop")
    data = write_pairs(root / "pairs" / "part-0.parquet", topic_pair_rows(seed=1))
    cfg = load_reward_config(
        "pipelines/reward.yaml",
        [
            f"data.path={data.parent}",
            f"output.path={root / 'rm'}",
            "max_length=48",
            "epochs=1",
            "lr=1e-4",
            "eval_fraction=0.2",
        ],
    )
    summary = train(cfg)
    model_dir = str(root / "rm" / "model")
    port = free_port()
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port))
    serve.run(
        build_app({"model": model_dir, "num_cpus": 0.25, "num_threads": 1}),
        name="loop",
        route_prefix="/",
    )
    yield {"url": f"http://127.0.0.1:{port}", "summary": summary}
    serve.shutdown()


def test_trained_model_serves_every_endpoint(endpoint):
    base, prompt = endpoint["url"], "Tell me something about cats."
    good, bad = "Cats are small domesticated felines that purr.", "Eagles are large birds of prey."
    score = requests.post(
        base + "/v1/score",
        json={"items": [{"prompt": prompt, "response": good}, {"prompt": prompt, "response": bad}]},
        timeout=60,
    ).json()
    r_good, r_bad = score["rewards"]
    compare = requests.post(
        base + "/v1/compare", json={"prompt": prompt, "a": good, "b": bad}, timeout=60
    ).json()
    assert compare["margin"] == pytest.approx(r_good - r_bad, abs=1e-4)
    rank = requests.post(
        base + "/v1/rank", json={"prompt": prompt, "responses": [bad, good]}, timeout=60
    ).json()
    assert rank["order"] == ([1, 0] if r_good > r_bad else [0, 1])
    filt = requests.post(
        base + "/v1/filter",
        json={"pairs": [{"prompt": prompt, "chosen": good, "rejected": bad}], "min_margin": 0},
        timeout=60,
    ).json()
    assert filt["results"][0]["keep"] == (r_good - r_bad > 0)
    reward = requests.post(base + "/get_reward", json={"query": [good]}, timeout=60).json()
    assert len(reward["rewards"]) == 1
    assert requests.get(base + "/readyz", timeout=30).status_code == 200
    # training ran to its end: 200 topic pairs, one epoch of batches of 16 on one worker
    summary = endpoint["summary"]
    assert summary["n_train"] + summary["n_eval"] == 200 and summary["n_eval"] > 0
    assert summary["complete"] and summary["steps"] == summary["total_steps"]
    assert summary["total_steps"] == math.ceil(summary["n_train"] / 16)


def test_pipeline_filter_drops_exactly_the_pairs_the_served_model_calls_inverted(
    endpoint, tmp_path
):
    base, out = endpoint["url"], tmp_path / "filtered"
    overrides = [
        *tiny_overrides(out, LIMIT, 16),
        *SMALL,
        "filter.kind=reward_model",
        f"filter.url={base}",
        "filter.num_cpus=0.1",
    ]
    run(load_pipeline(QUICKSTART, overrides))
    manifest = read_manifest(str(out))
    kept = read_rows(str(out), manifest, "pairs")
    dropped = [r for r in read_rows(str(out), manifest, "rejects") if r["stage"] == "filter"]
    assert kept or dropped, "the run must have produced pairs for the filter to judge"
    # Nothing lost, nothing invented: each of the LIMIT prompts has its pair kept or a no-pair
    # reject, and a prompt whose one best-vs-worst pair was dropped says so.
    rejects = read_rows(str(out), manifest, "rejects")
    no_pair = {r["id"]: r["reason"] for r in rejects if r["stage"] == "pair"}
    kept_prompts = {p["prompt_id"] for p in kept}
    assert len(kept) == len(kept_prompts) and not kept_prompts & set(no_pair)
    assert kept_prompts | set(no_pair) == set(_input_ids(LIMIT))
    assert {json.loads(r["raw"])["prompt_id"] for r in dropped} == {
        pid for pid, why in no_pair.items() if why == "no_pair: all_pairs_filtered_by_reward_model"
    }
    # each decision agrees with the served model's own margin for that pair
    judged = [(p, True) for p in kept] + [(json.loads(r["raw"]), False) for r in dropped]
    for pair, was_kept in judged:
        margin = requests.post(
            base + "/v1/compare",
            json={
                "prompt": pair["prompt"],
                "a": pair["chosen"][0]["content"],
                "b": pair["rejected"][0]["content"],
            },
            timeout=60,
        ).json()["margin"]
        assert pair["rm_margin"] == pytest.approx(margin, abs=1e-3)
        assert (margin > 0) == was_kept
    for r in dropped:
        assert r["reason"].startswith("rm_inverted") and r["id"] == json.loads(r["raw"])["id"]
    assert manifest["counts"]["pairs"] == len(kept)
    assert sum(manifest["counts"]["filtered_by_reason"].values()) == len(dropped)
