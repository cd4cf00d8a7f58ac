"""cluster/*.yaml against the KubeRay CRDs (vendored in cluster/crds/), offline.

Each CRD's `openAPIV3Schema` is what the Kubernetes API server checks a RayCluster / RayJob /
RayService against. It is OpenAPI v3 with Kubernetes extensions, so it is converted to plain
JSON Schema first (`to_json_schema`). Objects with declared properties get
`additionalProperties: false`: the API server would silently prune an unknown field, and
`kubectl apply` (strict field validation, its default) rejects it, so a misspelled field is an
error here too. Not covered: CEL rules (`x-kubernetes-validations`), formats such as int32
ranges, and what the operator itself checks at reconcile time.

The strings the schema cannot see into are checked by the real parsers: the RayService's
`serveConfigV2` by Ray Serve's schema and prefgen's ServeConfig, the RayJob's entrypoint by
running its config download against moto and loading the result.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import QUICKSTART, ROOT

CLUSTER = ROOT / "cluster"
CRDS = CLUSTER / "crds"
MANIFESTS = sorted(CLUSTER.glob("*.yaml"))
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML


def to_json_schema(node: dict) -> dict:
    """A Kubernetes structural schema (OpenAPI v3 + x-kubernetes-*) as JSON Schema."""
    out: dict = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        # e.g. resource quantities and ports: 2 and "2Gi" are both fine
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            props.setdefault(name, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> validator, for every served version of every vendored CRD."""
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=Loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = to_json_schema(version["schema"]["openAPIV3Schema"])
                jsonschema.Draft7Validator.check_schema(schema)
                found[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return found


def problems(doc: dict) -> list[str]:
    """Every schema violation of one manifest, as `path: message`."""
    validator = crd_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if validator is None:
        return [f"no CRD for apiVersion={doc.get('apiVersion')} kind={doc.get('kind')}"]
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    name = (doc.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        found.append(f"metadata.name: {name!r} is not a DNS label")
    return found


def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: one resource per file"
    return docs[0]


def pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [g["template"] for g in groups]


# -- the manifests ---------------------------------------------------------------------------


def test_the_three_kinds_are_all_here():
    kinds = {load(p.name)["kind"] for p in MANIFESTS}
    assert kinds == {"RayCluster", "RayJob", "RayService"}
    assert {kind for _, kind in crd_validators()} == kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_its_crd(path):
    assert problems(load(path.name)) == []


def test_image_and_ray_version_agree_everywhere():
    import prefgen

    base = re.search(
        r"^ARG BASE_IMAGE=rayproject/ray:([0-9.]+)-", (CLUSTER / "Dockerfile").read_text(), re.M
    )
    assert base, "cluster/Dockerfile names its rayproject/ray base image"
    for path in MANIFESTS:
        doc = load(path.name)
        spec = doc["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        assert cluster["rayVersion"] == base.group(1), path.name
        assert cluster["enableInTreeAutoscaling"] is True, path.name
        for template in pod_templates(doc):
            for container in template["spec"]["containers"]:
                assert container["image"] == f"prefgen:{prefgen.__version__}", path.name


def test_gpu_groups_ask_for_gpus_and_scale_from_zero():
    for path in MANIFESTS:
        doc = load(path.name)
        spec = doc["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        gpu = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
        assert gpu and gpu[0]["minReplicas"] == 0 < gpu[0]["maxReplicas"], path.name
        limits = gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] >= 1, path.name
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
        assert "nvidia.com/gpu" not in head["limits"], f"{path.name}: the head is CPU only"


# -- proof that the validation can fail ------------------------------------------------------


def _broken(name: str, edit) -> dict:
    doc = copy.deepcopy(load(name))
    edit(doc)
    return doc


def _worker(doc: dict, index: int = 0) -> dict:
    return doc["spec"]["workerGroupSpecs"][index]


NEGATIVE = {
    "misspelled top-level spec field": (
        "raycluster.yaml",
        lambda d: d["spec"].update(enableInTreeAutoscalling=True),
        "Additional properties are not allowed ('enableInTreeAutoscalling'",
    ),
    "misspelled required worker field": (
        "raycluster.yaml",
        lambda d: _worker(d).update(maxReplica=_worker(d).pop("maxReplicas")),
        "'maxReplicas' is a required property",
    ),
    "misspelled container field deep in the pod template": (
        "raycluster.yaml",
        lambda d: _worker(d)["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
        "Additional properties are not allowed ('imagePullPolicyy'",
    ),
    "replicas as a string": (
        "raycluster.yaml",
        lambda d: _worker(d).update(replicas="two"),
        "'two' is not of type 'integer'",
    ),
    "rayStartParams value not a string": (
        "raycluster.yaml",
        lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        "0 is not of type 'string'",
    ),
    "a quantity that is not one": (
        "raycluster.yaml",
        lambda d: _worker(d)["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            memory="lots"
        ),
        "'lots' does not match",
    ),
    "a value outside an enum": (
        "raycluster.yaml",
        lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),
        "'Fast' is not one of",
    ),
    "RayJob entrypoint not a string": (
        "rayjob.yaml",
        lambda d: d["spec"].update(entrypoint=["prefgen", "run"]),
        "is not of type 'string'",
    ),
    "RayService without its cluster": (
        "rayservice.yaml",
        lambda d: d["spec"].pop("rayClusterConfig"),
        "'rayClusterConfig' is a required property",
    ),
    "unknown kind": (
        "rayservice.yaml",
        lambda d: d.update(kind="RayServe"),
        "no CRD for",
    ),
}


@pytest.mark.parametrize("case", NEGATIVE, ids=list(NEGATIVE))
def test_a_broken_manifest_is_caught(case):
    name, edit, expected = NEGATIVE[case]
    found = problems(_broken(name, edit))
    assert any(expected in p for p in found), found


def test_schema_conversion_handles_kubernetes_extensions():
    schema = to_json_schema(
        {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "free": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "when": {"type": "string", "nullable": True},
            },
        }
    )
    ok = jsonschema.Draft7Validator(schema)
    assert ok.is_valid({"port": 8000, "free": {"a": "x", "anything": 1}, "when": None})
    assert ok.is_valid({"port": "http"})
    assert not ok.is_valid({"port": 1.5})
    assert not ok.is_valid({"free": {"a": 1}})  # declared fields keep their types
    assert not ok.is_valid({"other": 1})  # no preserve-unknown-fields at the top


# -- what the schema cannot see into ---------------------------------------------------------


def test_rayservice_serve_config_is_a_valid_prefgen_serve_app():
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from prefgen.serve.config import ServeConfig

    doc = load("rayservice.yaml")
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    assert serve_config.http_options.host == "0.0.0.0"  # reachable through the Service
    (app,) = serve_config.applications
    assert app.import_path == "prefgen.serve:build_app"
    cfg = ServeConfig(**app.args)  # unknown keys and bad values raise, naming the key
    assert cfg.model.startswith("s3://") and cfg.autoscaling
    AutoscalingConfig(**cfg.autoscaling)
    assert cfg.deployment_options()["autoscaling_config"] == cfg.autoscaling
    with pytest.raises(ValueError, match="max_itemz"):
        ServeConfig(**{**app.args, "max_itemz": 1})


def test_rayjob_entrypoint_fetches_its_config_from_s3_and_runs_prefgen(s3_server, tmp_path):
    """Run the entrypoint's download step against moto, then load what it fetched with the
    entrypoint's own overrides, exactly as `prefgen run` on the head pod would."""
    import s3fs

    entrypoint = load("rayjob.yaml")["spec"]["entrypoint"]
    fetch, _, run = entrypoint.partition("&&")
    fetch_argv, run_argv = shlex.split(fetch), shlex.split(run)
    assert fetch_argv[:2] == ["python", "-c"] and run_argv[:2] == ["prefgen", "run"]
    config_url, local = fetch_argv[3], fetch_argv[4]
    assert config_url.startswith("s3://") and run_argv[2] == local

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(config_url[5:].split("/")[0])
    fs.put_file(str(QUICKSTART), config_url[5:])

    target = tmp_path / "pipeline.yaml"  # not the pod's /tmp path: this machine is shared
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    done = subprocess.run(
        [sys.executable, "-c", fetch_argv[2], config_url, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_text() == QUICKSTART.read_text()

    from prefgen.run.registry import load_pipeline

    cfg = load_pipeline(target, run_argv[3:])
    assert cfg.input.path.startswith("s3://") and cfg.output.path.startswith("s3://")
