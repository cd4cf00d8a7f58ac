"""The loop's report: one page, per round, of what the reward model learned and what it saved.

Drawn from `loop.json`'s round records only (`prefgen.loop.rounds.round_summary` and the
training summary), so every bar shows a number the page's JSON also holds.
"""

from __future__ import annotations

import base64
import html
import json

from prefgen.data import storage
from prefgen.report.plots import BLUE, GREY, ORANGE, _bars, _png, plt

REPORT_FILE = "loop_report.html"


def loop_rows(state: dict) -> list[dict]:
    """One flat row per finished round (pure)."""
    rows = []
    for record in state.get("rounds", []):
        run, train = record.get("run") or {}, record.get("train") or {}
        rows.append(
            {
                "round": record["round"],
                "prompts": run.get("prompts"),
                "pairs": run.get("pairs"),
                "judged_prompts": run.get("judged_prompts"),
                "judged_share": run.get("judged_share"),
                "judge_seconds": run.get("judge_seconds"),
                "rm_judge_agreement": run.get("rm_judge_agreement"),
                "both_scored_pairs": run.get("both_scored_pairs"),
                "routed_by": run.get("routed_by"),
                "band": run.get("band"),
                "rm_eval_accuracy": train.get("eval_accuracy"),
                "rm_pairs": train.get("n_train"),
                "audit_items": (record.get("audit") or {}).get("items"),
            }
        )
    return rows


def loop_figures(rows: list[dict]) -> dict[str, bytes]:
    rounds = [f"round {r['round']}" for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    panels = [
        ("reward model held-out accuracy", "rm_eval_accuracy", BLUE, "{:.2f}"),
        ("share of prompts judged by LLMs", "judged_share", ORANGE, "{:.2f}"),
        ("reward model agrees with judges", "rm_judge_agreement", GREY, "{:.2f}"),
        ("pairs", "pairs", BLUE, "{:.0f}"),
    ]
    for ax, (title, key, color, fmt) in zip(axes, panels, strict=True):
        values = [r[key] if r[key] is not None else 0 for r in rows]
        _bars(ax, rounds, values, color=color, fmt=fmt)
        ax.set_title(title, fontsize=9)
        if key != "pairs":
            ax.set_ylim(0, 1.05)
    return {"rounds": _png(fig)}


def loop_page(state: dict, rows: list[dict], figures: dict[str, bytes]) -> str:
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in figures.items()
    )
    data = html.escape(json.dumps({"name": state.get("name"), "rounds": rows}, default=str))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>prefgen loop "
        f"{html.escape(str(state.get('name')))}</title></head><body>"
        f"<h1>prefgen loop: {html.escape(str(state.get('name')))}</h1>"
        f"<p>Each round: the pipeline on new prompts (from round 2 routed by the previous "
        f"round's reward model: only the prompts with the smallest reward gaps go to the LLM "
        f"judges), then a reward model trained on every pair so far.</p>{images}"
        f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"
        f"<script type='application/json' id='loop-data'>{data}</script></body></html>"
    )


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def write_loop_report(state: dict, fs, root: str) -> str:
    """Write `loop_report.html` under the loop's output; returns its path."""
    rows = loop_rows(state)
    page = loop_page(state, rows, loop_figures(rows))
    path = storage.join(root, REPORT_FILE)
    storage.write_bytes_atomic(fs, path, page.encode("utf-8"))
    return path
