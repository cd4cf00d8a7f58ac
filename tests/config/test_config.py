"""Config loading without Ray: typed values, dotted overrides, errors that name the key and where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefgen.config import ConfigError, LLMJudgeConfig, ModelConfig, PipelineConfig, config_hash
from prefgen.run.registry import load_pipeline

QUICKSTART = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"
OVERRIDE = "command-line override"


def _quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def _write(tmp_path: Path, data, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _error(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------- loading


def test_quickstart_loads_typed():
    cfg = load_pipeline(QUICKSTART)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == "quickstart"
    assert (
        cfg.input.path == "pipelines/data/quickstart_prompts.jsonl" and cfg.input.format == "auto"
    )
    assert cfg.output.path == "runs/quickstart" and cfg.output.overwrite is False
    assert cfg.limit is None
    assert cfg.ingest.max_prompt_chars == 8000 and cfg.ingest.dedup is True
    declared = yaml.safe_load(QUICKSTART.read_text())["generate"]["max_tokens"]
    assert isinstance(cfg.generate.max_tokens, int) and cfg.generate.max_tokens == declared
    assert [m.name for m in cfg.generate.models] == ["smol-helpful", "smol-stepwise", "smol-terse"]
    assert all(isinstance(m, ModelConfig) for m in cfg.generate.models)
    helpful = cfg.generate.models[0]
    assert isinstance(helpful.temperature, float) and helpful.temperature == 0.7
    assert (
        helpful.num_cpus == 0.875
        and helpful.concurrency == 2
        and helpful.batch_size == 6
        and helpful.engine == "transformers"
    )
    assert helpful.max_tokens is None  # inherits generate.max_tokens
    assert cfg.generate.models[2].max_tokens == 48
    (judge,) = cfg.judge.llm
    assert (
        isinstance(judge, LLMJudgeConfig)
        and judge.rubric == "coig_p"
        and judge.model.name == "smol-judge"
    )
    assert cfg.judge.math_verifier.enabled and cfg.judge.math_verifier.domains == ["math"]
    assert cfg.judge.weights == {"coig_p": 1.0, "math": 1.0}
    declared_pairing = yaml.safe_load(QUICKSTART.read_text())["pairing"]
    assert cfg.pairing.strategy == declared_pairing["strategy"]
    assert (
        isinstance(cfg.pairing.min_margin, float)
        and cfg.pairing.min_margin == declared_pairing["min_margin"]
    )


def test_overrides_apply():
    cfg = load_pipeline(
        QUICKSTART,
        [
            "generate.max_tokens=128",
            "limit=5",
            "generate.models.0.temperature=0.3",
            "pairing.strategy=all_pairs",
            "output.path=/tmp/elsewhere",
            "ingest.dedup=false",
        ],
    )
    assert cfg.generate.max_tokens == 128
    assert cfg.limit == 5
    assert cfg.generate.models[0].temperature == 0.3
    assert cfg.generate.models[1].temperature == 0.9  # the others are untouched
    assert [m.name for m in cfg.generate.models] == ["smol-helpful", "smol-stepwise", "smol-terse"]
    assert cfg.pairing.strategy == "all_pairs"
    assert cfg.output.path == "/tmp/elsewhere"
    assert cfg.ingest.dedup is False


def test_override_can_empty_a_list(tmp_path):
    """`judge.llm=[]` is accepted as an override (weights must then not name the dropped judge)."""
    data = _quickstart()
    data["judge"]["weights"] = {"math": 1.0}
    cfg = load_pipeline(_write(tmp_path, data), ["judge.llm=[]"])
    assert cfg.judge.llm == []


def test_override_cannot_remove_a_dict_key():
    """Dict overrides merge: `judge.weights={}` keeps coig_p, so dropping the judge needs a YAML edit."""
    msg = _error(QUICKSTART, ["judge.llm=[]", "judge.weights={math: 1.0}"])
    assert "judge.weights.coig_p" in msg


def test_override_of_required_value_is_enough(tmp_path):
    data = _quickstart()
    del data["input"]
    cfg = load_pipeline(_write(tmp_path, data), ["input.path=prompts.jsonl"])
    assert cfg.input.path == "prompts.jsonl"


# ---------------------------------------------------------------- errors: in a YAML file


def test_unknown_top_level_key(tmp_path):
    data = _quickstart()
    data["generation"] = {"max_tokens": 1}
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "generation" in msg and str(path) in msg


def test_unknown_nested_key_in_file(tmp_path):
    data = _quickstart()
    data["generate"]["modles"] = []
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "generate.modles" in msg and str(path) in msg


def test_unknown_key_in_a_model(tmp_path):
    data = _quickstart()
    data["generate"]["models"][1]["temprature"] = 0.5
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "temprature" in msg and str(path) in msg


def test_wrong_type_in_file(tmp_path):
    data = _quickstart()
    data["generate"]["max_tokens"] = "lots"
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "generate.max_tokens" in msg and str(path) in msg


@pytest.mark.parametrize("section", ["input", "output"])
def test_missing_required_path(tmp_path, section):
    data = _quickstart()
    del data[section]["path"]
    path = _write(tmp_path, data)
    msg = _error(path)
    assert f"{section}.path" in msg and str(path) in msg and "missing" in msg


def test_no_models(tmp_path):
    data = _quickstart()
    data["generate"]["models"] = []
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "generate.models" in msg and str(path) in msg


def test_duplicate_model_names(tmp_path):
    data = _quickstart()
    data["generate"]["models"][2]["name"] = "smol-helpful"
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "generate.models" in msg and "smol-helpful" in msg and str(path) in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = _error(path)
    assert str(path) in msg and "not found" in msg


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "name: quickstart\ngenerate: [unclosed\n")
    msg = _error(path)
    assert str(path) in msg and "YAML" in msg


def test_empty_yaml_reports_required_keys(tmp_path):
    path = _write(tmp_path, "")
    msg = _error(path)
    assert "input.path" in msg and "output.path" in msg and str(path) in msg


def test_yaml_list_at_top_level_is_a_config_error(tmp_path):
    path = _write(tmp_path, "- name: quickstart\n")
    with pytest.raises(ConfigError) as exc:
        load_pipeline(path)
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------- errors: semantic checks (file or override)


@pytest.mark.parametrize(
    "override,key",
    [
        ("judge.llm.0.rubric=nonsense", "judge.llm.0.rubric"),
        ("pairing.strategy=best_of_all", "pairing.strategy"),
        ("generate.models.1.engine=onnx", "generate.models.1.engine"),
        ("judge.llm.0.model.engine=onnx", "judge.llm.0.model.engine"),
        ("judge.weights.helpfulness=1.0", "judge.weights.helpfulness"),
        ("generate.models.0.name=smol-terse", "generate.models"),
        ("generate.models=[]", "generate.models"),
        ("input.format=csv", "input.format"),
        ("limit=0", "limit"),
        ("generate.models.0.batch_size=0", "generate.models.0.batch_size"),
    ],
)
def test_semantic_errors_name_the_key(override, key):
    msg = _error(QUICKSTART, [override])
    assert f"'{key}'" in msg
    # validation runs on the merged config; it names the file it started from
    assert str(QUICKSTART) in msg or OVERRIDE in msg


def test_unknown_rubric_in_file(tmp_path):
    data = _quickstart()
    data["judge"]["llm"][0]["rubric"] = "nonsense"
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "judge.llm.0.rubric" in msg and "nonsense" in msg and str(path) in msg


def test_weights_naming_a_dropped_judge(tmp_path):
    data = _quickstart()
    data["judge"]["llm"] = []  # weights still name coig_p
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "judge.weights.coig_p" in msg and str(path) in msg


def test_no_scorer_at_all(tmp_path):
    data = _quickstart()
    data["judge"] = {"llm": [], "math_verifier": {"enabled": False}}
    path = _write(tmp_path, data)
    msg = _error(path)
    assert "'judge'" in msg and str(path) in msg


# ---------------------------------------------------------------- errors: command-line overrides


@pytest.mark.parametrize(
    "override,key",
    [
        ("generate.modles=3", "generate.modles"),
        ("generaet.max_tokens=3", "generaet"),
        ("generate.max_tokens=abc", "generate.max_tokens"),
        ("limit=several", "limit"),
        ("generate.models.0.temprature=0.5", "generate.models.0.temprature"),
        ("generate.models.7.temperature=0.5", "generate.models.7.temperature"),
        ("ingest.dedup=maybe", "ingest.dedup"),
    ],
)
def test_bad_override_names_key_and_origin(override, key):
    msg = _error(QUICKSTART, [override])
    assert key in msg and OVERRIDE in msg


def test_override_without_equals():
    msg = _error(QUICKSTART, ["limit=3", "generate.max_tokens"])
    assert "generate.max_tokens" in msg and "override" in msg and "key=value" in msg


# ---------------------------------------------------------------- config_hash


def test_config_hash_stable_for_equal_configs():
    a = load_pipeline(QUICKSTART)
    b = load_pipeline(QUICKSTART)
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16
    # the same values reached through an override hash the same
    same = a.generate.max_tokens
    assert config_hash(load_pipeline(QUICKSTART, [f"generate.max_tokens={same}"])) == config_hash(a)


@pytest.mark.parametrize(
    "override",
    [
        "generate.max_tokens=97",
        "generate.models.0.temperature=0.3",
        "generate.seed=1",
        "pairing.strategy=all_pairs",
        "ingest.max_prompt_chars=2000",
        "input.path=other.jsonl",
        "limit=5",
    ],
)
def test_config_hash_changes_with_what_shapes_the_output(override):
    assert config_hash(load_pipeline(QUICKSTART, [override])) != config_hash(
        load_pipeline(QUICKSTART)
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["output.path=s3://bucket/elsewhere"],
        ["output.overwrite=false"],
        ["ray.num_cpus=2"],
        ["ray.address=ray://head:10001"],
    ],
)
def test_config_hash_ignores_destination_and_ray(overrides):
    assert config_hash(load_pipeline(QUICKSTART, overrides)) == config_hash(
        load_pipeline(QUICKSTART)
    )


def test_storage_credentials_never_reach_the_manifest():
    import json

    from prefgen.config import to_dict

    cfg = load_pipeline(
        QUICKSTART,
        [
            "output.storage_options.key=AKIAEXAMPLE",
            "output.storage_options.secret=s3cr3t",
            "input.storage_options.client_kwargs.aws_secret_access_key=zzz",
            "input.storage_options.client_kwargs.endpoint_url=http://minio:9000",
        ],
    )
    data = to_dict(cfg)
    blob = json.dumps(data)
    assert "AKIAEXAMPLE" not in blob and "s3cr3t" not in blob and "zzz" not in blob
    assert data["input"]["storage_options"]["client_kwargs"]["endpoint_url"] == "http://minio:9000"
    assert cfg.output.storage_options["secret"] == "s3cr3t"  # the run itself still uses it
