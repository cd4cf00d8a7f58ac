"""Pair normalization (pure) and reading pair files in every supported layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from reward.topic_pairs import topic_pair_rows, write_pairs

from prefgen.reward.data import (
    is_held_out,
    load_pairs,
    normalize_pair,
    normalize_rows,
    split_pairs,
)

USER = {"role": "user", "content": "What is 2 + 2?"}


def test_prefgen_row_keeps_prompt_margin_domain_and_aspects():
    row = topic_pair_rows()[0]
    record = normalize_pair(row)
    assert record["prompt"] == row["prompt"]
    assert record["chosen"] == row["chosen"][0]["content"]
    assert record["rejected"] == row["rejected"][0]["content"]
    assert record["margin"] == pytest.approx(row["margin"])
    assert record["domain"] == row["domain"]
    assert record["chosen_aspects"] == {"judge.relevance": pytest.approx(row["chosen_score"])}
    assert record["rejected_aspects"] == {"judge.relevance": pytest.approx(row["rejected_score"])}
    assert record["id"] == row["id"] and record["group"] == row["prompt_id"]


def test_explicit_prompt_with_string_responses():
    record = normalize_pair({"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"})
    assert record["prompt"] == [USER]
    assert (record["chosen"], record["rejected"]) == ("4", "5")
    assert record["margin"] is None and record["chosen_aspects"] is None


def test_implicit_prompt_conversations_split_at_shared_prefix():
    history = [USER, {"role": "assistant", "content": "4"}, {"role": "user", "content": "Sure?"}]
    record = normalize_pair(
        {
            "chosen": [*history, {"role": "assistant", "content": "Yes, 4."}],
            "rejected": [*history, {"role": "assistant", "content": "No, 5."}],
            "score_chosen": 9,
            "score_rejected": 4,
        }
    )
    assert record["prompt"] == history
    assert (record["chosen"], record["rejected"]) == ("Yes, 4.", "No, 5.")
    assert record["margin"] == 5.0  # UltraFeedback-binarized score columns


def test_explicit_prompt_repeated_inside_conversations_is_kept_once():
    record = normalize_pair(
        {
            "prompt": [USER],
            "chosen": [USER, {"role": "assistant", "content": "4"}],
            "rejected": [USER, {"role": "assistant", "content": "5"}],
        }
    )
    assert record["prompt"] == [USER]
    assert (record["chosen"], record["rejected"]) == ("4", "5")


def test_plain_text_conversations_have_empty_prompt_and_own_group():
    a = normalize_pair(
        {"chosen": "Human: hi\n\nAssistant: hello", "rejected": "Human: hi\n\nAssistant: go"}
    )
    b = normalize_pair(
        {"chosen": "Human: yo\n\nAssistant: hey", "rejected": "Human: yo\n\nAssistant: no"}
    )
    assert a["prompt"] == "" and a["chosen"].endswith("hello")
    assert a["group"] == a["id"] and a["group"] != b["group"]


def test_bad_rows_are_counted_by_reason_not_fatal():
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a"},
        {"prompt": "q", "chosen": "a", "rejected": "  "},
        {"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]},
        {"prompt": "q", "chosen": [{"text": "a"}], "rejected": [{"text": "b"}]},
        {"prompt": "q", "chosen": 3, "rejected": 4},
    ]
    records, skipped = normalize_rows(rows)
    assert len(records) == 1
    assert skipped == {
        "missing chosen or rejected": 1,
        "empty response": 1,
        "chosen and rejected differ in format": 1,
        "chosen is not a list of messages": 1,
        "chosen is neither text nor messages": 1,
    }


def test_split_is_by_prompt_and_deterministic():
    records = [normalize_pair(r) for r in topic_pair_rows()]
    # Two pairs on one prompt must land on the same side.
    twin = dict(records[0], id="twin", chosen="another answer")
    train, held_out = split_pairs([*records, twin], 0.25)
    assert 0.1 < len(held_out) / (len(train) + len(held_out)) < 0.4
    side = {r["id"]: r in held_out for r in held_out + train}
    assert side["twin"] == side[records[0]["id"]]
    assert split_pairs(records, 0.25) == split_pairs(records, 0.25)
    assert split_pairs(records, 0.0)[1] == []
    # "On every machine": another interpreter, with another string-hash seed, splits alike.
    groups = [r["group"] for r in records]
    here = [is_held_out(g, 0.25) for g in groups]
    code = (
        "import json, sys; from prefgen.reward.data import is_held_out; "
        "print(json.dumps([is_held_out(g, 0.25) for g in json.load(sys.stdin)]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(groups),
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout) == here and any(here) and not all(here)


def test_reads_parquet_jsonl_json_glob_and_dir(tmp_path):
    rows = topic_pair_rows()[:6]
    write_pairs(tmp_path / "d" / "a.parquet", rows[:3])
    (tmp_path / "d" / "b.jsonl").write_text(
        "\n".join(
            json.dumps({"prompt": r["prompt"][0]["content"], "chosen": "x", "rejected": "y"})
            for r in rows[3:5]
        )
    )
    (tmp_path / "d" / "c.json").write_text(json.dumps([{"chosen": "t1", "rejected": "t2"}]))
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    records, skipped = load_pairs(str(tmp_path / "d"))
    assert len(records) == 6 and skipped == {}
    assert len(load_pairs(str(tmp_path / "d" / "*.jsonl"))[0]) == 2
    assert len(load_pairs(str(tmp_path / "d" / "a.parquet"))[0]) == 3
    with pytest.raises(FileNotFoundError):
        load_pairs(str(tmp_path / "missing"))


def test_run_directory_reads_only_manifest_shards(tmp_path):
    rows = topic_pair_rows()
    write_pairs(tmp_path / "run" / "pairs" / "part-0.parquet", rows[:4])
    write_pairs(tmp_path / "run" / "pairs" / "part-stale.parquet", rows[4:10])  # not committed
    manifest = {"shards": {"pairs": [{"path": "pairs/part-0.parquet", "rows": 4}]}}
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    records, _ = load_pairs(str(tmp_path / "run"))
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows[:4])


def test_reads_from_s3(tmp_path, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="rm-data")
    path = write_pairs(tmp_path / "p.parquet", topic_pair_rows()[:5])
    import fsspec

    fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_server}).put_file(
        str(path), "rm-data/pairs/p.parquet"
    )
    records, _ = load_pairs("s3://rm-data/pairs")
    assert len(records) == 5
