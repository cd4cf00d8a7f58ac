"""Reward-model evaluation: metrics (pure), reports on crafted and third-party files, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from prefgen.reward.evaluate import calibration, evaluate, pairwise_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pairwise_metrics_count_ties_half():
    m = pairwise_metrics([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 1.0])
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(2.5 / 4)
    assert m["mean_margin"] == pytest.approx((1 - 1 + 0 + 4) / 4)
    assert m["loss"] == pytest.approx(
        sum(math.log1p(math.exp(-x)) for x in (1.0, -1.0, 0.0, 4.0)) / 4
    )


def test_calibration_on_symmetrized_pairs():
    ece, bins = calibration([0.0] * 8)  # p = 0.5 both ways, half the labels 1: calibrated
    assert ece == pytest.approx(0.0)
    assert sum(b["count"] for b in bins) == 16
    ece, bins = calibration([math.log(3.0)] * 8)  # says 0.75, is always right: off by 0.25
    assert ece == pytest.approx(0.25)
    assert [b["count"] for b in bins if b["count"]] == [8, 8]
    ece, _ = calibration([-math.log(3.0)] * 8)  # says 0.25, is always wrong: off by 0.75
    assert ece == pytest.approx(0.75)
    ece, _ = calibration([30.0] * 8)  # confident and right
    assert ece < 1e-6


def _held_out_records(cfg):
    from prefgen.reward.data import load_pairs, split_pairs

    records, _ = load_pairs(cfg.data.path)
    return split_pairs(records, cfg.eval_fraction)[1]


def _independent_accuracy(model_url, records):
    """The model's own rewards, side by side; accuracy counted here (a tie is half right)."""
    from prefgen.reward.model import load_reward_model, score

    model, tokenizer = load_reward_model(model_url)
    prompts = [r["prompt"] for r in records]
    chosen, _ = score(model.eval(), tokenizer, prompts, [r["chosen"] for r in records])
    rejected, _ = score(model, tokenizer, prompts, [r["rejected"] for r in records])
    right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected))
    return right / len(records)


@pytest.mark.e2e
def test_report_on_crafted_set_with_a_flipped_domain(trained, tmp_path):
    result, cfg = trained
    held_out = _held_out_records(cfg)[:12]
    rows = []
    for r in held_out:
        prompt = r["prompt"][0]["content"]
        rows.append(
            {"prompt": prompt, "chosen": r["chosen"], "rejected": r["rejected"], "domain": "right"}
        )
        rows.append(
            {
                "prompt": prompt,
                "chosen": r["rejected"],
                "rejected": r["chosen"],
                "domain": "flipped",
            }
        )
    data = tmp_path / "crafted.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))

    report = evaluate(result["model"], str(data), str(tmp_path / "eval"))
    right, flipped = report["per_domain"]["right"], report["per_domain"]["flipped"]
    assert report["n_pairs"] == 24 and right["n"] == flipped["n"] == 12
    assert right["accuracy"] >= 0.9 and flipped["accuracy"] <= 0.1
    assert right["accuracy"] + flipped["accuracy"] == pytest.approx(1.0)  # the same pairs, mirrored
    assert report["accuracy"] == pytest.approx(0.5)
    assert right["mean_margin"] == pytest.approx(-flipped["mean_margin"], rel=1e-4)
    assert 0.0 <= report["ece"] <= 1.0
    assert sum(b["count"] for b in report["reliability"]) == 48
    assert sum(report["margin_histogram"]["counts"]) == 24

    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (
        written["accuracy"] == report["accuracy"] and written["per_domain"] == report["per_domain"]
    )
    png = (tmp_path / "eval" / "eval.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


@pytest.mark.e2e
def test_third_party_text_conversations_to_s3(trained, tmp_path, s3_server):
    """HH-RLHF style: chosen/rejected are whole conversations as text; report written to S3."""
    import boto3
    import fsspec

    from prefgen.reward.data import normalize_rows

    result, cfg = trained
    rows = [
        {
            "chosen": f"\n\nHuman: {r['prompt'][0]['content']}\n\nAssistant: {r['chosen']}",
            "rejected": f"\n\nHuman: {r['prompt'][0]['content']}\n\nAssistant: {r['rejected']}",
        }
        for r in _held_out_records(cfg)[:10]
    ]
    rows.append({"chosen": "only one side"})  # a broken row is counted, not fatal
    data = tmp_path / "hh.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="rm-eval")

    report = evaluate(result["model"], str(data), "s3://rm-eval/report")
    assert report["n_pairs"] == 10 and report["skipped"] == {"missing chosen or rejected": 1}
    records, _ = normalize_rows(rows)
    assert all(r["prompt"] == "" for r in records)
    assert report["accuracy"] == pytest.approx(_independent_accuracy(result["model"], records))
    # no domain anywhere: one "(none)" group holding every pair, so it is the whole report
    assert report["per_domain"] == {
        "(none)": {
            "n": 10,
            "accuracy": pytest.approx(report["accuracy"]),
            "mean_margin": pytest.approx(report["mean_margin"]),
        }
    }
    s3 = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_server})
    assert json.loads(s3.cat_file("rm-eval/report/eval.json"))["n_pairs"] == 10
    assert s3.cat_file("rm-eval/report/eval.png").startswith(PNG_MAGIC)


@pytest.mark.e2e
def test_cli_eval_rm_and_train_rm_on_a_finished_output(trained, tmp_path, capsys):
    from prefgen.cli import main

    result, cfg = trained
    assert (
        main(
            ["eval-rm", "--model", result["model"], "--data", cfg.data.path, "--out", str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and "ECE" in out and (tmp_path / "eval.json").is_file()
    # The same config again: the output already holds the finished run, so nothing is trained.
    assert main(["train-rm", *result["cli_args"]]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and f"steps           {result['steps']}/" in out
    assert main(["train-rm", result["cli_args"][0], "epochs=zero"]) == 2
    assert "key 'epochs'" in capsys.readouterr().err
