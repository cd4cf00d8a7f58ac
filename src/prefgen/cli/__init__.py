"""`prefgen` command line: run a pipeline, look at a run."""

from __future__ import annotations

import argparse
import json
import sys

from prefgen.config import ConfigError
from prefgen.run.registry import load_pipeline


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
    # --- reward model: train-rm, eval-rm ---
    train_p = sub.add_parser(
        "train-rm", help="train a reward model: prefgen train-rm CONFIG [key=value ...]"
    )
    train_p.add_argument("config", help="e.g. pipelines/reward.yaml")
    train_p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. data.path=RUN_DIR output.path=DIR"
    )
    loop_p = sub.add_parser(
        "loop",
        help="rounds of run -> train-rm -> serve -> routed run: prefgen loop CONFIG [key=value ...]",
    )
    loop_p.add_argument("config", help="e.g. pipelines/loop.yaml")
    loop_p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. output=DIR")
    eval_p = sub.add_parser("eval-rm", help="evaluate a reward model on preference pairs")
    eval_p.add_argument("--model", required=True, help="saved reward model dir (path or URL)")
    eval_p.add_argument("--data", required=True, help="pairs: run dir, file, dir or glob (URL)")
    eval_p.add_argument("--out", default="rm-eval", help="where eval.json/eval.png go")
    # --- end reward model ---
    # --- curation: rebuild-pairs, audit export|merge, report (prefgen.cli.curation) ---
    from prefgen.cli import curation as curation_cli

    curation_cli.add_commands(sub)
    # --- serve: the reward model over HTTP (prefgen.serve.app) ---
    serve_p = sub.add_parser("serve", help="serve a reward model over HTTP with Ray Serve")
    serve_p.add_argument("--model", required=True, help="saved reward model dir (path or URL)")
    serve_p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen beyond here")
    serve_p.add_argument("--port", type=int, default=8000)
    serve_p.add_argument("--replicas", type=int, default=1, help="model replicas")
    serve_p.add_argument("--token-env", help="env var holding a bearer token to require")
    # --- jobs: submit to a Ray cluster, look after jobs (prefgen.run.jobs) ---
    from prefgen.run import jobs

    jobs.add_commands(sub)
    args = parse_args(parser, sub, argv)
    if args.command in ("submit", "jobs"):
        return jobs.command(args)
    # --- end jobs ---
    if args.command == "serve":
        from prefgen.serve.app import serve_command

        return serve_command(args.model, args.host, args.port, args.replicas, args.token_env)
    # --- end serve ---

    if args.command in curation_cli.COMMANDS:
        return curation_cli.command(args)
    if args.command == "run":
        return _run(args.config, args.overrides)
    if args.command == "status":
        return _status(args.output)
    if args.command == "train-rm":
        return _train_rm(args.config, args.overrides)
    if args.command == "loop":
        return _loop(args.config, args.overrides)
    if args.command == "eval-rm":
        return _eval_rm(args.model, args.data, args.out)
    return 2


def parse_args(parser: argparse.ArgumentParser, sub, argv: list[str] | None) -> argparse.Namespace:
    """Parse with options and `key=value` overrides in any order.

    argparse gives a `nargs="*"` positional only the words right after CONFIG, so
    `submit CFG --address URL a=b` would leave `a=b` unrecognized; such leftovers are
    overrides too, kept in command-line order (a later override of the same key wins).
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        takes = hasattr(args, "overrides")
        bad = [t for t in extra if not (takes and _is_override(t))]
        if bad:
            sub.choices.get(args.command, parser).error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = [*args.overrides, *extra]
    return args


def _is_override(token: str) -> bool:
    return not token.startswith("-") and "=" in token


def _run(config_path: str, overrides: list[str]) -> int:
    from prefgen.ingest.sources import path_replaces_sources

    try:
        cfg = load_pipeline(config_path, overrides)
        replaced = path_replaces_sources(cfg, overrides)
        if replaced:  # `input.path=my.jsonl` on a preset with sources: read the user's file
            extra, note = replaced
            print(f"prefgen: {note}", file=sys.stderr)
            cfg = load_pipeline(config_path, [*overrides, *extra])
    except ConfigError as exc:
        print(f"prefgen: config error: {exc}", file=sys.stderr)
        return 2
    from prefgen.run.pipeline import OutputExists, run
    from prefgen.run.preflight import PreflightError
    from prefgen.run.shards import ErrorCeiling

    try:
        result = run(cfg)
    except (OutputExists, FileNotFoundError, PreflightError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    except ErrorCeiling as exc:
        print(f"prefgen: stopped: {exc}", file=sys.stderr)
        return 3
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
    ray_used = manifest.get("execution", {}).get("ray")
    if ray_used:
        lines.append(f"  ray             {ray_used}")
    lines.append(f"  output          {output_url}  (pairs/, responses/, rejects/, manifest.json)")
    return "\n".join(lines)


def _status(output: str) -> int:
    from prefgen.data.manifest import read_manifest

    manifest = read_manifest(output)
    if manifest is None:
        from prefgen.data import storage
        from prefgen.run import shards

        fs, root = storage.filesystem(output)
        state = shards.progress(fs, root)
        if state is None:
            print(f"{output}: not a prefgen run (no manifest.json, no _work/plan.json)")
            return 1
        print(
            f"{output}: unfinished run (config {state['config_hash']}): "
            f"{state['records']} records in {state['shards']} shards"
        )
        for phase, done in state["phases"].items():
            print(f"  {phase:<32} {done:>5}/{state['shards']} shards committed")
        print("  run the same command again to resume")
        return 1
    print(summary(manifest, output))
    print(
        json.dumps({"started_at": manifest["started_at"], "finished_at": manifest["finished_at"]})
    )
    return 0


def _train_rm(config_path: str, overrides: list[str]) -> int:
    from prefgen.reward.train import load_reward_config, train

    try:
        cfg = load_reward_config(config_path, overrides)
    except ConfigError as exc:
        print(f"prefgen: config error: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    accuracy = result.get("eval_accuracy")
    print(
        f"\nprefgen train-rm '{cfg.name}' finished in {result['seconds']:.0f}s\n"
        f"  pairs           {result['n_train']} train, {result['n_eval']} held out\n"
        f"  steps           {result['steps']}/{result['total_steps']}"
        f" (resumed from {result['resumed_from_step']})\n"
        f"  held-out acc    {'-' if accuracy is None else f'{accuracy:.3f}'}\n"
        f"  trained in      {result['ran_on'] or '- (nothing left to train)'}\n"
        f"  model           {result['model']}"
    )
    return 0


def _loop(config_path: str, overrides: list[str]) -> int:
    from prefgen.loop.rounds import Loop, load_loop
    from prefgen.run.pipeline import OutputExists
    from prefgen.run.preflight import PreflightError

    try:
        loop = Loop(load_loop(config_path, overrides))
    except (ConfigError, ValueError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    try:
        state = loop.run()
    except (OutputExists, FileNotFoundError, PreflightError, ConfigError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    for record in state["rounds"]:
        run, train = record["run"], record["train"]
        judged = run["judged_share"]
        print(
            f"round {record['round']}: {run['pairs']} pairs from {run['prompts']} prompts, "
            f"{'all' if judged is None or judged == 1 else f'{judged:.0%}'} judged by LLMs; "
            f"reward model held-out accuracy {_fmt(train['eval_accuracy'])} "
            f"({train['n_train']} training pairs)"
        )
    print(f"report: {state['report']}")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _eval_rm(model: str, data: str, out: str) -> int:
    from prefgen.reward.evaluate import evaluate

    try:
        result = evaluate(model, data, out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    lines = [
        f"prefgen eval-rm: {result['n_pairs']} pairs in {result['seconds']:.0f}s",
        f"  accuracy        {result['accuracy']:.3f}",
        f"  ECE             {result['ece']:.3f}",
        f"  mean margin     {result['mean_margin']:.3f}",
    ]
    for domain, m in result["per_domain"].items():
        lines.append(f"  domain {domain:<12} {m['n']:>5} pairs  accuracy {m['accuracy']:.3f}")
    if result["skipped"]:
        lines.append(f"  skipped rows    {result['skipped']}")
    lines.append(f"  report          {out}/eval.json, {out}/eval.png")
    print("\n".join(lines))
    return 0
