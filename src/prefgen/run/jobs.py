"""Run a pipeline on a remote Ray cluster through the Ray Jobs API, and look after the job.

`prefgen submit CONFIG [key=value ...] --address http://HEAD:8265` validates the config here
(a typo costs a second, not a queued cluster job), uploads the project directory as the
job's `working_dir`, and runs `prefgen run CONFIG key=value ...` on the cluster as the job's
entrypoint; it then follows the job's logs, and its exit status is the job's (0 SUCCEEDED, 1
FAILED or STOPPED, 2 nothing submitted). `prefgen jobs list|status|logs|stop` look after jobs.
It is the same as

    ray job submit --address http://HEAD:8265 --working-dir . -- prefgen run CONFIG key=value ...

plus the local validation, the excludes below, and the option to ship prefgen itself.

Two ways to get prefgen onto the cluster: an image with it installed (cluster/Dockerfile; the
default here, nothing is installed per job), or `--install-prefgen`: the package travels as a
`py_modules` entry and its dependencies are pip-installed into the job's environment, pinned to
the versions installed here (Ray itself excepted: the cluster's own Ray must serve the job).

Paths in the config and overrides are read on the cluster: relative ones resolve inside the
uploaded working directory (so `pipelines/data/...` inputs work), and output belongs on shared
storage (`s3://...`), since a relative output path would land in the job's temporary copy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from prefgen.config import ConfigError
from prefgen.run.registry import load_pipeline

# Never uploaded: environments, VCS data, caches and run outputs (Ray caps a working_dir
# package at a few hundred MiB, and a .venv alone is gigabytes).
EXCLUDES = [
    ".venv",
    "venv",
    ".git",
    "runs",
    "out",
    "build",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "rm-eval",
    "cluster/crds",
]
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STOP_TIMEOUT_S = 60.0  # Ray sends SIGTERM, then SIGKILL after its own grace period


class SubmitError(RuntimeError):
    """Nothing was submitted; the message says why."""


def pinned_requirements(dist: str = "prefgen") -> list[str]:
    """`dist`'s runtime requirements pinned to the versions installed here, Ray excepted.

    Local version labels (`2.13.0+cpu`) are dropped: they name a build index the cluster may
    not use; the public version is what must match.
    """
    from packaging.requirements import Requirement

    pins = []
    for spec in metadata.requires(dist) or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's dependency (gpu, dev), not a runtime one
        if req.name.lower() == "ray":
            continue
        try:
            version = metadata.version(req.name).split("+")[0]
        except metadata.PackageNotFoundError:
            pins.append(str(req))
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        pins.append(f"{req.name}{extras}=={version}")
    return pins


def runtime_env(
    working_dir: str | Path, pip: list[str] | None = None, install_prefgen: bool = False
) -> dict[str, Any]:
    """The job's runtime_env: the project directory, plus prefgen and pip packages if asked."""
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(EXCLUDES)}
    packages = list(pip or [])
    if install_prefgen:
        import prefgen

        env["py_modules"] = [str(Path(prefgen.__file__).parent)]
        packages = pinned_requirements() + packages
    if packages:
        env["pip"] = packages
    return env


def entrypoint(
    config: str, overrides: list[str], install_prefgen: bool = False, verb: str = "run"
) -> str:
    """The shell command the job runs; `python -m` where no `prefgen` script is installed."""
    command = ["python", "-m", "prefgen.cli"] if install_prefgen else ["prefgen"]
    return shlex.join([*command, verb, config, *overrides])


def validate(config: str, overrides: list[str]) -> tuple[str, str, str]:
    """(verb, name, output) of a pipeline config, or of a loop config (one with `rounds`),
    checked here before anything is submitted."""
    from prefgen.config import load
    from prefgen.config.loader import read_yaml_file
    from prefgen.config.loop import LoopConfig

    data = read_yaml_file(Path(config))
    if isinstance(data, dict) and "rounds" in data:
        loop = load(config, overrides, LoopConfig)
        return "loop", loop.name, loop.output
    cfg = load_pipeline(config, overrides)
    return "run", cfg.name, cfg.output.path


def config_in_working_dir(config: str | Path, working_dir: str | Path) -> str:
    """CONFIG as the job sees it: relative to the uploaded working directory."""
    path, root = Path(config).resolve(), Path(working_dir).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise SubmitError(
            f"{config} is outside --working-dir {working_dir}: the job only sees what is "
            "uploaded with it"
        ) from None


@contextmanager
def _without_address_env():
    # Ray's SDK lets RAY_ADDRESS override an explicit address; here the flag wins.
    saved = {name: os.environ.pop(name) for name in ADDRESS_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def auth_headers() -> dict[str, str]:
    """The cluster's bearer token, from where Ray keeps it: $RAY_AUTH_TOKEN, the file at
    $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token.

    Why here: Ray clusters enable token auth where a token exists, but the SDK only sends it
    when this process runs with RAY_AUTH_MODE=token. A token sent to a cluster without auth
    is ignored, so sending it whenever one is found is safe.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str | None):
    """A JobSubmissionClient for `address` (else RAY_API_SERVER_ADDRESS / RAY_ADDRESS)."""
    from ray.job_submission import JobSubmissionClient

    if not address and not any(os.environ.get(name) for name in ADDRESS_ENV):
        raise SubmitError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    try:
        if address:
            with _without_address_env():
                return JobSubmissionClient(address, headers=auth_headers())
        return JobSubmissionClient(headers=auth_headers())
    except ConnectionError as exc:
        raise SubmitError(
            f"cannot reach the Ray dashboard at {address or 'RAY_ADDRESS'}: {exc}"
        ) from None


def submit(
    address: str | None,
    config: str,
    overrides: list[str],
    working_dir: str = ".",
    pip: list[str] | None = None,
    install_prefgen: bool = False,
    submission_id: str | None = None,
) -> tuple[Any, str]:
    """Validate CONFIG here, then submit it; returns (client, job id)."""
    try:
        verb, name, out = validate(config, overrides)
    except ConfigError as exc:
        raise SubmitError(f"config error (nothing submitted): {exc}") from None
    relative = config_in_working_dir(config, working_dir)
    if "://" not in out and not os.path.isabs(out):
        print(
            f"prefgen: warning: output {out!r} is relative: on the cluster it lands in the "
            "job's temporary working directory; use s3://... or an absolute shared path",
            file=sys.stderr,
        )
    jobs = client(address)
    job_id = jobs.submit_job(
        entrypoint=entrypoint(relative, overrides, install_prefgen, verb),
        runtime_env=runtime_env(working_dir, pip, install_prefgen),
        submission_id=submission_id,
        metadata={"prefgen_config": relative, "prefgen_name": name, "prefgen_output": out},
    )
    return jobs, job_id


def follow(jobs, job_id: str, poll_s: float = 1.0) -> str:
    """Print the job's logs as they come until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:  # the log stream broke off; the status still tells the end
        print(f"prefgen: log stream ended early ({exc}); polling the status", file=sys.stderr)
    return wait(jobs, job_id, poll_s)


def wait(jobs, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None) -> str:
    """Poll until the job is in a terminal state (or timeout_s passes); returns the status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(jobs.get_job_status(job_id))
        if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(poll_s)


def add_commands(sub) -> None:
    """Add `submit` and `jobs` to the `prefgen` argument parser's subcommands."""
    p = sub.add_parser(
        "submit", help="run a pipeline on a Ray cluster: prefgen submit CONFIG [key=value ...]"
    )
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, as for prefgen run")
    _address_arg(p)
    p.add_argument("--working-dir", default=".", help="uploaded as the job's working dir")
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="REQ",
        help="pip requirement for the job's environment (repeatable)",
    )
    p.add_argument(
        "--install-prefgen",
        action="store_true",
        help="the cluster lacks prefgen: ship it and pip-install its pinned dependencies",
    )
    p.add_argument("--submission-id", help="job id to use (default: generated)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")

    jobs_p = sub.add_parser("jobs", help="look after submitted jobs: list | status | logs | stop")
    actions = jobs_p.add_subparsers(dest="action", required=True)
    _address_arg(actions.add_parser("list", help="jobs on the cluster, newest last"))
    for name, text in (
        ("status", "a job's status"),
        ("logs", "a job's logs"),
        ("stop", "stop a job"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("job_id")
        _address_arg(a)
        if name == "logs":
            a.add_argument("--follow", action="store_true", help="until the job ends")
        if name == "stop":
            a.add_argument("--no-wait", action="store_true", help="do not wait for it to stop")


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="the cluster's dashboard, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
        "$RAY_ADDRESS)",
    )


def command(args: argparse.Namespace) -> int:
    """Run `submit` or `jobs ...`; exit status 2 when nothing could be done."""
    try:
        return _submit(args) if args.command == "submit" else _jobs(args)
    except RuntimeError as exc:  # SubmitError, or the job server's: unknown job id, refused, ...
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2


def _submit(args: argparse.Namespace) -> int:
    jobs, job_id = submit(
        args.address,
        args.config,
        args.overrides,
        args.working_dir,
        args.pip,
        args.install_prefgen,
        args.submission_id,
    )
    print(f"prefgen: submitted job {job_id}", flush=True)
    if args.no_wait:
        print(f"  follow: prefgen jobs logs {job_id} --follow --address {jobs.get_address()}")
        return 0
    try:
        status = follow(jobs, job_id)
    except KeyboardInterrupt:
        print(f"\nprefgen: job {job_id} keeps running; prefgen jobs stop {job_id}", file=sys.stderr)
        return 130
    print(f"prefgen: job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def _jobs(args: argparse.Namespace) -> int:
    jobs = client(args.address)
    if args.action == "list":
        for job in sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0):
            name = (job.metadata or {}).get("prefgen_name", "")
            print(f"{job.submission_id or job.job_id}  {job.status!s:<9}  {name}  {job.entrypoint}")
        return 0
    if args.action == "status":
        info = jobs.get_job_info(args.job_id)
        print(f"{args.job_id}  {info.status}  {info.message or ''}".rstrip())
        return 0
    if args.action == "logs":
        if args.follow:
            status = follow(jobs, args.job_id)
            return 0 if status == "SUCCEEDED" else 1
        print(jobs.get_job_logs(args.job_id), end="")
        return 0
    stopped = jobs.stop_job(args.job_id)
    status = wait(jobs, args.job_id, timeout_s=0 if args.no_wait else STOP_TIMEOUT_S)
    print(f"{args.job_id}  {status}{'' if stopped else '  (was not running)'}")
    return 0
