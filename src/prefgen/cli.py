"""`prefgen` command line: run a pipeline, look at a run."""

from __future__ import annotations

import argparse
import json
import sys

from prefgen.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prefgen", description="Prompts in, preference pairs out."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a pipeline: prefgen run CONFIG [key=value ...]")
    run_p.add_argument("config")
    run_p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. generate.max_tokens=128 limit=10"
    )
    status_p = sub.add_parser("status", help="show a run's manifest summary")
    status_p.add_argument("output")
    args = parser.parse_args(argv)

    if args.command == "run":
        return _run(args.config, args.overrides)
    if args.command == "status":
        return _status(args.output)
    return 2


def _run(config_path: str, overrides: list[str]) -> int:
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as exc:
        print(f"prefgen: config error: {exc}", file=sys.stderr)
        return 2
    from prefgen.pipeline import OutputExists, run

    try:
        result = run(cfg)
    except (OutputExists, FileNotFoundError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    print(summary(result.manifest, result.output_url))
    return 0


def summary(manifest: dict, output_url: str) -> str:
    c = manifest["counts"]
    lines = [
        "",
        f"prefgen run '{manifest['name']}' finished in {manifest['seconds']:.0f}s  (config {manifest['config_hash']})",
        f"  records in      {c.get('records_in', 0)}",
        f"  prompts ok      {c.get('prompts_ok', 0)}",
        f"  responses       {c.get('responses', 0)}",
        f"  pairs out       {c.get('pairs', 0)}",
    ]
    for reason, n in sorted(c.get("rejected_by_reason", {}).items()):
        lines.append(f"  rejected        {n:>4}  {reason}")
    for reason, n in sorted(c.get("no_pair_by_reason", {}).items()):
        lines.append(f"  no pair         {n:>4}  {reason}")
    for name, m in sorted(c.get("models", {}).items()):
        rate = m.get("tokens_per_s")
        lines.append(
            f"  model {name:<14} {m.get('responses', 0):>4} responses  {m.get('tokens', 0):>6} tokens  {rate if rate is not None else '-'} tokens/s"
        )
    lines.append(f"  output          {output_url}  (pairs/, responses/, rejects/, manifest.json)")
    return "\n".join(lines)


def _status(output: str) -> int:
    from prefgen.manifest import read_manifest

    manifest = read_manifest(output)
    if manifest is None:
        print(f"{output}: no committed manifest (running, crashed, or not a prefgen run)")
        return 1
    print(summary(manifest, output))
    print(
        json.dumps({"started_at": manifest["started_at"], "finished_at": manifest["finished_at"]})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
