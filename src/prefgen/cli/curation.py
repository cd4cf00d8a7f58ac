"""CLI for curation after a run: `rebuild-pairs`, `audit export|merge`, `report`.

Kept out of `cli.py` so the top-level parser only gains two lines (`add_commands`,
`command`); each handler prints a short summary and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = ("rebuild-pairs", "audit", "report")


def _quota(text: str) -> tuple[str, int]:
    domain, sep, count = text.partition("=")
    if not sep or not domain or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected DOMAIN=COUNT, got {text!r}")
    return domain, int(count)


def add_commands(sub) -> None:
    from prefgen.curation.audit import FORMATS
    from prefgen.pairing.strategies import STRATEGIES

    rebuild = sub.add_parser(
        "rebuild-pairs", help="new pairs from a run's responses/ (no generation, no judging)"
    )
    rebuild.add_argument("output", help="a finished run (dir or URL)")
    rebuild.add_argument("--strategy", required=True, choices=STRATEGIES)
    rebuild.add_argument("--min-margin", type=float)
    rebuild.add_argument("--min-chosen-score", type=float)
    rebuild.add_argument("--max-pairs-per-prompt", type=int)
    rebuild.add_argument("--max-length-ratio", type=float, help="longer/shorter, characters")
    rebuild.add_argument("--min-judge-agreement", type=float, help="share of judges, 0-1")
    rebuild.add_argument("--min-rm-margin", type=float, help="needs pairs with rm_margin")
    rebuild.add_argument(
        "--domain-quota", type=_quota, action="append", default=[], metavar="DOMAIN=COUNT"
    )
    rebuild.add_argument("--seed", type=int)
    rebuild.add_argument("--out", help="new output dir (default OUTPUT/pairs-rebuilt-<id>/)")

    audit = sub.add_parser("audit", help="human audit: export a sample, merge labels back")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="stratified blinded sample per domain")
    export.add_argument("output")
    export.add_argument("--per-domain", type=int, default=40, help="COIG-P audits 40")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, help="JSON file to import into the tool")
    export.add_argument("--seed", type=int, default=0)
    merge = audit_sub.add_parser("merge", help="labels file (tool export) -> pairs-audited/")
    merge.add_argument("output")
    merge.add_argument("labels_file")

    report = sub.add_parser("report", help="write OUTPUT/report.html and OUTPUT/README.md")
    report.add_argument("output")


def command(args) -> int:
    try:
        if args.command == "rebuild-pairs":
            return _rebuild(args)
        if args.command == "audit":
            return _audit(args)
        return _report(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2


def _rebuild(args) -> int:
    from prefgen.curation.rebuild import rebuild_pairs

    given = {
        "strategy": args.strategy,
        "min_margin": args.min_margin,
        "min_chosen_score": args.min_chosen_score,
        "max_pairs_per_prompt": args.max_pairs_per_prompt,
        "max_length_ratio": args.max_length_ratio,
        "min_judge_agreement": args.min_judge_agreement,
        "min_rm_margin": args.min_rm_margin,
        "domain_quotas": dict(args.domain_quota) or None,
        "seed": args.seed,
    }
    entry = rebuild_pairs(args.output, given, out=args.out)
    c = entry["counts"]
    print(
        f"prefgen rebuild-pairs {entry['id']}: {c['pairs']} pairs from {c['prompts']} prompts"
        f" -> {entry['location']}\n  no pair: {json.dumps(c['no_pair_by_reason'])}"
        f"  quota drops: {json.dumps(c['dropped_by_quota'])}  rm drops: {c['dropped_by_rm']}"
    )
    return 0


def _audit(args) -> int:
    from prefgen.curation.audit import export_audit, merge_audit

    if args.audit_command == "export":
        summary = export_audit(args.output, args.per_domain, args.format, args.out, args.seed)
        print(
            f"prefgen audit export: {summary['items']} items -> {args.out} {summary['per_domain']}"
        )
        return 0
    entry = merge_audit(args.output, args.labels_file)
    rate = entry["agreement"]
    print(
        f"prefgen audit merge: {entry['n']} labelled pairs, judge-human agreement "
        f"{'-' if rate is None else f'{rate:.3f}'} ({entry['flipped']} flipped,"
        f" {entry['ties']} ties) -> {args.output}/pairs-audited/"
    )
    return 0


def _report(args) -> int:
    from prefgen.report.build import write_report

    data = write_report(args.output)
    print(
        f"prefgen report: {data['counts']['pairs']} pairs -> {args.output}/report.html,"
        f" {args.output}/README.md"
    )
    return 0
