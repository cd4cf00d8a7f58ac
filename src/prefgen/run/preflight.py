"""Pre-flight checks: what a run needs from the world outside its config, checked before any
model loads or any GPU is reserved.

Why: without them a typo in a bucket name, a dead reward endpoint or a missing API key shows
up minutes later, after the model actors have loaded, as a stack trace from deep inside a
stage; and a pipeline whose model pools reserve every CPU does not fail at all, it hangs (the
0.25-CPU light tasks that read, score and write never get scheduled; see bench/README.md).

- `check_config(cfg)`: no Ray. Input files exist, the output is writable (a probe object is
  written and deleted), the reward filter's and router's endpoints answer GET /healthz, each openai engine's
  `base_url` answers GET /models and its `api_key_env` is set, model paths exist.
- `check_resources(cfg, resources)`: pure. The model pools' CPU and GPU reservations against a
  cluster's totals (`ray.cluster_resources()`), leaving `light_cpus` free for light tasks.
- `check_cluster(cfg)`: `check_resources` on the running Ray cluster (after `ray.init`).

Each raises `PreflightError` listing every problem found, each naming its config key.

What is not covered: read permission on each input file (only listing is tried); free space
at the output; vLLM model ids and remote weights (vLLM resolves those itself); whether an
openai server serves the named model (only that it answers and accepts the key); nodes an
autoscaling cluster would add later (`check_resources` sees the cluster as it is now).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from prefgen.config import INPUT_SUFFIXES, LIGHT_TASK_CPUS, ModelConfig, PipelineConfig
from prefgen.data import storage

REWARD_META_FILE = "prefgen_reward.json"  # prefgen.reward.model.META_FILE, without torch


class PreflightError(ValueError):
    """Every problem found, one per line, each starting with the config key it concerns."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"pre-flight checks failed ({len(self.problems)}):\n{lines}")


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise PreflightError(problems)


# -- without Ray ----------------------------------------------------------------------------


def check_config(cfg: PipelineConfig, timeout_s: float = 5.0) -> None:
    """Every check that needs no Ray; raises PreflightError naming each bad key."""
    problems = [
        *check_input(cfg),
        *check_output(cfg),
        *check_reward_clients(cfg, timeout_s),
    ]
    for key, model in model_configs(cfg):
        problems += check_model(key, model, timeout_s)
    _raise_if(problems)


def check_input(cfg: PipelineConfig) -> list[str]:
    suffixes = INPUT_SUFFIXES.get(cfg.input.format, ())
    try:
        files = storage.list_files(cfg.input.path, cfg.input.storage_options, suffixes)
    except FileNotFoundError:
        return [f"input.path: {cfg.input.path} does not exist"]
    except Exception as exc:  # credentials, endpoint, permissions: say which and move on
        return [f"input.path: cannot list {cfg.input.path}: {_brief(exc)}"]
    if not files:
        return [f"input.path: no {'/'.join(suffixes)} files at {cfg.input.path}"]
    return []


def check_output(cfg: PipelineConfig) -> list[str]:
    """Write and delete a small probe object where the run will write."""
    try:
        fs, root = storage.filesystem(cfg.output.path, cfg.output.storage_options)
        existed = fs.exists(root)
        probe = storage.join(root, f".prefgen-preflight-{uuid.uuid4().hex[:12]}")
        storage.write_bytes_atomic(fs, probe, b"prefgen pre-flight probe\n")
        fs.rm(probe)
    except Exception as exc:
        return [f"output.path: cannot write to {cfg.output.path}: {_brief(exc)}"]
    if not existed and storage.is_local(fs):
        try:
            os.rmdir(root)  # leave no trace of a run that has not started
        except OSError:
            pass
    return []


def check_reward_clients(cfg: PipelineConfig, timeout_s: float) -> list[str]:
    """The reward filter's and the router's reward model: endpoint up, or model dir there."""
    problems = []
    for section, c in (("filter", cfg.filter), ("route", cfg.route)):
        if c.kind != "reward_model":
            continue
        if c.token_env and not os.environ.get(c.token_env):
            problems.append(f"{section}.token_env: environment variable {c.token_env} is not set")
        if c.url:
            url = c.url.rstrip("/") + "/healthz"
            status, error = _http_get(url, timeout_s)
            if error:
                problems.append(f"{section}.url: {c.url} is unreachable (GET /healthz: {error})")
            elif status != 200:
                problems.append(f"{section}.url: GET {url} answered HTTP {status}, not 200")
        elif c.model:
            problems += _check_reward_model(f"{section}.model", c.model)
    return problems


def model_configs(cfg: PipelineConfig) -> list[tuple[str, ModelConfig]]:
    """(config key, model) for every model the run uses: the stage registry's list."""
    from prefgen.run.registry import model_uses

    return [(use.key, use.model) for use in model_uses(cfg)]


def check_model(key: str, model: ModelConfig, timeout_s: float) -> list[str]:
    if model.engine == "openai":
        return _check_openai(key, model, timeout_s)
    if model.engine == "vllm" and not _looks_local(model.path):
        return []  # an HF id or a remote URI: vLLM resolves it on the GPU nodes
    from prefgen.engines.model_source import ModelNotFound, locate_model

    try:
        locate_model(model.path)
    except ModelNotFound as exc:
        return [f"{key}.path: {exc}"]
    return []


def _check_openai(key: str, model: ModelConfig, timeout_s: float) -> list[str]:
    problems = []
    api_key = None
    if model.api_key_env:
        api_key = os.environ.get(model.api_key_env)
        if not api_key:
            problems.append(
                f"{key}.api_key_env: environment variable {model.api_key_env} is not set"
            )
    if not model.base_url:
        return [*problems, f"{key}.base_url: engine openai needs base_url"]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = model.base_url.rstrip("/") + "/models"
    status, error = _http_get(url, timeout_s, headers)
    if error:
        problems.append(f"{key}.base_url: {model.base_url} is unreachable (GET /models: {error})")
    elif status in (401, 403) and api_key:
        problems.append(
            f"{key}.api_key_env: {model.base_url} rejected the key in {model.api_key_env} "
            f"(HTTP {status})"
        )
    return problems  # any other answer (even 404: not every server lists models) is a server


def _check_reward_model(key: str, url: str) -> list[str]:
    try:
        fs, path = storage.filesystem(url)
        if fs.exists(storage.join(path, REWARD_META_FILE)):
            return []
        what = "holds no saved reward model" if fs.exists(path) else "does not exist"
    except Exception as exc:
        what = f"cannot be read: {_brief(exc)}"
    return [f"{key}: {url} {what} ({REWARD_META_FILE} missing)"]


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~", "package:")) or path.endswith(".gguf")


def _http_get(url: str, timeout_s: float, headers: dict | None = None):
    """(status, None) for any HTTP answer, (None, why) when there is none."""
    import requests

    try:
        resp = requests.get(url, headers=headers or {}, timeout=timeout_s)
    except requests.RequestException as exc:
        return None, _brief(exc)
    return resp.status_code, None


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# -- against a cluster ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    key: str  # config keys of the models (or the stage) the pool serves
    cpus: float  # reserved by the whole pool: num_cpus x concurrency
    gpus: float


def model_pools(cfg: PipelineConfig) -> list[Pool]:
    """The actor pools a run holds, with what each reserves: exactly the pools the pipeline
    creates (`prefgen.run.pools.plan` over the stage registry), so the two cannot drift."""
    return [pool for phase in phase_pools(cfg) for pool in phase]


def phase_pools(cfg: PipelineConfig) -> list[list[Pool]]:
    """`model_pools` per phase (`prefgen.run.pools.phases`): the pools that are up at once."""
    from prefgen.run import pools
    from prefgen.run.registry import build_stages

    found = []
    for _, steps in pools.phases(pools.plan(build_stages(cfg)), cfg.execution.mode):
        found.append([])
        for step in steps:
            if not step.pool:
                continue
            keys = [use.key for stage in step.stages for use in stage.models] or [
                stage.section for stage in step.stages if stage.holds is not None
            ]
            n = step.concurrency
            found[-1].append(Pool(", ".join(keys), step.num_cpus * n, step.num_gpus * n))
    return found


def check_resources(
    cfg: PipelineConfig, resources: dict, light_cpus: float = LIGHT_TASK_CPUS
) -> None:
    """The pools of the most demanding phase (all pools when streaming, one when phased, split
    where a per-shard decision ends a phase) against the cluster's CPU and GPU totals. Pure:
    `resources` is `ray.cluster_resources()`."""
    phases = phase_pools(cfg)
    cpu_pools = max(phases, key=lambda ps: sum(p.cpus for p in ps))
    gpu_pools = max(phases, key=lambda ps: sum(p.gpus for p in ps))
    total_cpus, total_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    problems = []
    cpus = sum(p.cpus for p in cpu_pools)
    if total_cpus - cpus < light_cpus - 1e-9:  # 0.4 + 0.4 + 0.4 + 0.5 is 1.7000000000000002
        holders = [p for p in cpu_pools if p.cpus]
        problems.append(
            f"{', '.join(p.key for p in holders)}: num_cpus x concurrency reserve {cpus:g} of "
            f"the cluster's {total_cpus:g} CPUs ({' + '.join(f'{p.cpus:g}' for p in holders)}), "
            f"leaving less than the {light_cpus:g} CPU that reading, scoring and writing need: "
            "the run would hang. Lower num_cpus or concurrency, use execution.mode: phased, "
            "or give Ray more CPUs (ray.num_cpus)"
        )
    gpus = sum(p.gpus for p in gpu_pools)
    if gpus > total_gpus + 1e-9:
        holders = [p for p in gpu_pools if p.gpus]
        problems.append(
            f"{', '.join(p.key for p in holders)}: num_gpus x concurrency need {gpus:g} GPUs "
            f"at once ({' + '.join(f'{p.gpus:g}' for p in holders)}); the cluster has "
            f"{total_gpus:g}"
        )
    _raise_if(problems)


def check_cluster(cfg: PipelineConfig, light_cpus: float = LIGHT_TASK_CPUS) -> None:
    """`check_resources` against the connected Ray cluster; call after `ray.init`."""
    import ray

    check_resources(cfg, ray.cluster_resources(), light_cpus)
