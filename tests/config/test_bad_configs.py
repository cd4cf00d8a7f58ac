"""The bad-config corpus (tests/fixtures/bad_configs/*.yaml): each file is the quickstart with one
defect, and the step its header names must catch it with a message naming the key.

Steps, in the order a run meets them: `load` (prefgen.run.registry.load_pipeline), `config`
(prefgen.run.preflight.check_config: files, endpoints, keys, model paths; no Ray), `resources`
(prefgen.run.preflight.check_resources against the header's cluster). A defect must also pass
every step before its own: it is caught where it is meant to be, not earlier by accident.

    .venv/bin/python -m pytest tests/test_bad_configs.py -q
"""

from __future__ import annotations

import json

import pytest
from conftest import QUICKSTART, ROOT

from prefgen.config import ConfigError
from prefgen.run.preflight import PreflightError, check_config, check_resources
from prefgen.run.registry import load_pipeline

CORPUS = ROOT / "tests" / "fixtures" / "bad_configs"
FILES = sorted(CORPUS.glob("*.yaml"))
STEPS = ("load", "config", "resources")


def header(path) -> dict[str, str]:
    """The `# key: value` lines at the top of a corpus file."""
    found = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(": ")
        if sep:
            found[key] = value
    return found


def run_steps(path, tmp_path, cluster: dict) -> None:
    """load -> check_config -> check_resources, as a run would; raises at the first problem."""
    overrides = [] if header(path).get("keep-output") else [f"output.path={tmp_path / 'out'}"]
    cfg = load_pipeline(path, overrides)
    check_config(cfg, timeout_s=3.0)
    check_resources(cfg, cluster)


def test_corpus_covers_every_step():
    steps = [header(f).get("check") for f in FILES]
    assert len(FILES) >= 15 and set(steps) == set(STEPS), steps


def test_quickstart_itself_passes_every_step(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run_steps(QUICKSTART, tmp_path, {"CPU": 2.0})
    assert not (tmp_path / "out").exists()  # the output probe leaves nothing behind


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_bad_config_is_caught_naming_the_key(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the corpus uses the quickstart's repo-relative paths
    monkeypatch.delenv("PREFGEN_TEST_UNSET_API_KEY", raising=False)
    meta = header(path)
    cluster = json.loads(meta.get("cluster", '{"CPU": 64, "GPU": 8}'))
    error = {"load": ConfigError, "config": PreflightError, "resources": PreflightError}
    with pytest.raises(error[meta["check"]]) as caught:
        run_steps(path, tmp_path, cluster)
    message = str(caught.value)
    assert meta["expect"] in message
    if meta["check"] != "load":
        # caught by the intended pre-flight step, with one line per problem
        assert all(line.startswith("  - ") for line in message.splitlines()[1:]), message
        is_resources = "num_cpus x concurrency" in message or "num_gpus x" in message
        assert is_resources == (meta["check"] == "resources"), message
