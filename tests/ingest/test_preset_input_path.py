"""`prefgen run PRESET input.path=my.jsonl` on a preset with `input.sources` reads my.jsonl.

The preset's sources are paths under `input.path`; a path given on the command line that holds
none of them is the user's own input: read whole, the mixture dropped with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefgen.cli import main
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.ingest.sources import path_replaces_sources
from prefgen.run.registry import load_pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
ULTRAFEEDBACK = PIPELINES / "ultrafeedback.yaml"
MINE = [  # none of these is in the preset's own prompt files
    {"id": "mine-1", "prompt": "Name one primary colour.", "domain": "chat"},
    {
        "id": "mine-2",
        "prompt": "What is 3 + 4? Give the final answer as a number.",
        "domain": "math",
    },
    {"id": "mine-3", "prompt": "Say hello in French."},
]


@pytest.fixture
def my_prompts(tmp_path) -> Path:
    path = tmp_path / "my.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MINE))
    return path


def _replaced(*overrides: str):
    return path_replaces_sources(load_pipeline(ULTRAFEEDBACK, list(overrides)), list(overrides))


def test_a_file_replaces_the_sources_with_a_note_naming_what_is_dropped(my_prompts):
    extra, note = _replaced(f"input.path={my_prompts}")
    assert extra == ["input.sources=[]", "ingest.stratify_by=null"]
    # the preset's two sources and their quotas, as pipelines/ultrafeedback.yaml sets them
    assert "general (quota 24), code (quota 4)" in note
    assert "ingest.stratify_by" in note and "input.sources.N.path" in note


def test_the_sources_stay_where_the_user_did_not_mean_a_file_of_prompts(my_prompts, tmp_path):
    assert _replaced("limit=2") is None  # no input.path on the command line
    assert _replaced(f"input.path={PIPELINES / 'data'}") is None  # the sources are there
    # the user is steering the sources: they keep their meaning (and their error, below)
    assert _replaced(f"input.path={my_prompts}", "input.sources.1.quota=1") is None
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "quickstart_prompts.jsonl").write_text(my_prompts.read_text())
    assert _replaced(f"input.path={partial}") is None  # one source found: not "my prompts"
    cfg = load_pipeline(PIPELINES / "quickstart.yaml", [f"input.path={my_prompts}"])
    assert path_replaces_sources(cfg, [f"input.path={my_prompts}"]) is None  # no sources


def test_a_directory_with_only_some_sources_fails_naming_the_missing_source(
    capsys, tmp_path, my_prompts
):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "quickstart_prompts.jsonl").write_text(my_prompts.read_text())
    rc = main(["run", str(ULTRAFEEDBACK), f"input.path={partial}", f"output.path={tmp_path / 'o'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "input.sources.1.path" in err and "code_prompts.jsonl" in err


@pytest.mark.e2e
def test_ultrafeedback_on_my_prompts_end_to_end(ray_session, capsys, tmp_path, my_prompts):
    out = tmp_path / "run"
    rc = main(
        [
            "run",
            str(ULTRAFEEDBACK),
            f"input.path={my_prompts}",
            f"output.path={out}",
            "limit=2",
            "generate.max_tokens=8",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    assert "note: input.path=" in captured.err and "general (quota 24)" in captured.err
    manifest = read_manifest(str(out))
    assert manifest["input"]["files"] == [str(my_prompts)]
    assert manifest["config"]["input"]["sources"] == []
    assert manifest["counts"]["records_in"] == 2  # limit=2 of my three, in file order
    responses = read_rows(str(out), manifest, "responses")
    assert {r["prompt_id"] for r in responses} == {"mine-1", "mine-2"}
    assert all("source_name" not in json.loads(r["prompt_meta"]) for r in responses)
    rejects = read_rows(str(out), manifest, "rejects")
    assert not [r for r in rejects if r["reason"].startswith("over_quota")]
    assert len(responses) == 2 * 2  # the preset's method is kept: 2 of its 3 models per prompt
