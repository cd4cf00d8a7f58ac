"""`prefgen report OUTPUT`: a self-contained `report.html` and a dataset card `README.md`.

Skywork-Reward-V2's lesson is that curation matters more than scale (docs/research.md
"Curation over scale: Skywork-Reward-V2"), so a run should show what each stage kept and which biases the data carries:
score and margin distributions, per-model win rates, per-domain counts, judge agreement,
each judge's length bias, keep rate per stage and reason (from the manifest counts) and
tokens and time per model. Every number shown is also embedded as JSON
(`<script type="application/json" id="report-data">`) so tests and tools can read the
figures back; the PNGs (`report_plots`) are inlined as base64, so the file opens anywhere.

All statistics are pure functions of the tables' rows and the manifest. Lengths are in
characters (tokenizer-independent and present in both tables).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter
from typing import Any

from prefgen.curation.rebuild import vote_exclusions
from prefgen.data import storage
from prefgen.data.manifest import read_manifest, read_rows
from prefgen.data.schema import PAIR_SCORE_COLUMNS, decode_pair, score_dict
from prefgen.pairing.strategies import judge_votes

__all__ = ["build_report", "collect", "write_report"]


# --- statistics (pure) ------------------------------------------------------------------------


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # tied values share their average rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    return pearson(_ranks(xs), _ranks(ys))


def _text(messages: list[dict] | None) -> str:
    return "".join(m.get("content") or "" for m in messages or [])


def _judge_scores(scores: dict[str, float]) -> dict[str, float]:
    grouped: dict[str, list[float]] = {}
    for name, value in scores.items():
        if value is not None and math.isfinite(value):
            grouped.setdefault(name.split(".", 1)[0], []).append(value)
    return {j: sum(v) / len(v) for j, v in grouped.items()}


def model_win_rates(pairs: list[dict]) -> dict[str, dict]:
    """Per model: pairs it was chosen / rejected in, and chosen / (chosen + rejected)."""
    chosen = Counter(p.get("chosen_model") for p in pairs)
    rejected = Counter(p.get("rejected_model") for p in pairs)
    return {
        str(m): {
            "chosen": chosen[m],
            "rejected": rejected[m],
            "win_rate": chosen[m] / (chosen[m] + rejected[m]),
        }
        for m in sorted(set(chosen) | set(rejected), key=str)
    }


def domain_counts(pairs: list[dict], responses: list[dict]) -> dict[str, dict]:
    prompts: dict[str, set] = {}
    for r in responses:
        prompts.setdefault(str(r.get("domain")), set()).add(r.get("prompt_id"))
    n_pairs = Counter(str(p.get("domain")) for p in pairs)
    return {
        d: {"prompts": len(prompts.get(d, ())), "pairs": n_pairs[d]}
        for d in sorted(set(prompts) | set(n_pairs))
    }


def judge_agreement(pairs: list[dict], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """How judges agree on pairs: per judge pair, the share of pairs both scored where they
    order the two responses the same way (ties agree only with ties); and the distribution of
    each pair's share of judges preferring chosen. `exclude`: aggregate scores (an ensemble's),
    which agree with their members by construction."""
    judges: set[str] = set()
    together: Counter = Counter()
    same: Counter = Counter()
    shares = []
    for p in pairs:
        c, r = _judge_scores(p["chosen_scores"]), _judge_scores(p["rejected_scores"])
        both = sorted((set(c) & set(r)) - set(exclude))
        judges.update(both)
        signs = {j: (c[j] > r[j]) - (c[j] < r[j]) for j in both}
        for i, a in enumerate(both):
            for b in both[i + 1 :]:
                together[(a, b)] += 1
                same[(a, b)] += signs[a] == signs[b]
        share, n = judge_votes(p["chosen_scores"], p["rejected_scores"], exclude)
        if n >= 2:
            shares.append(share)
    return {
        "judges": sorted(judges),
        "pairwise": {f"{a}|{b}": same[(a, b)] / n for (a, b), n in sorted(together.items())},
        "pair_agreement": shares,
        "mean_pair_agreement": sum(shares) / len(shares) if shares else None,
    }


def length_bias(pairs: list[dict], responses: list[dict]) -> dict[str, dict]:
    """Per judge (and `overall`, the score pairs were built on): how often its preferred
    response of a pair is the longer one (0.5 = no bias), and the Pearson / Spearman
    correlation of its score with response length over all responses."""
    wins: Counter = Counter()
    decided: Counter = Counter()
    for p in pairs:
        lc, lr = len(_text(p["chosen"])), len(_text(p["rejected"]))
        if lc == lr:
            continue
        c, r = _judge_scores(p["chosen_scores"]), _judge_scores(p["rejected_scores"])
        c["overall"], r["overall"] = p["chosen_score"], p["rejected_score"]
        for j in set(c) & set(r):
            if c[j] != r[j]:
                decided[j] += 1
                wins[j] += (c[j] > r[j]) == (lc > lr)
    points: dict[str, tuple[list, list]] = {}
    for resp in responses:
        scores = _judge_scores(resp.get("scores") or {})
        if resp.get("overall") is not None:
            scores["overall"] = resp["overall"]
        for j, value in scores.items():
            xs, ys = points.setdefault(j, ([], []))
            xs.append(float(len(resp.get("text") or "")))
            ys.append(value)
    out = {}
    for j in sorted(set(points) | set(decided)):
        xs, ys = points.get(j, ([], []))
        out[j] = {
            "pairs_decided": decided[j],
            "longer_wins": wins[j] / decided[j] if decided[j] else None,
            "pearson": pearson(xs, ys),
            "spearman": spearman(xs, ys),
            "responses": len(xs),
        }
    return out


def keep_rates(counts: dict) -> list[dict]:
    """Each stage's input, output, keep rate and drop reasons, from the manifest counts."""
    rejected = counts.get("rejected_by_reason") or {}
    no_pair = counts.get("no_pair_by_reason") or {}
    filtered = counts.get("filtered_by_reason") or {}
    records, prompts, pairs = (
        counts.get("records_in", 0),
        counts.get("prompts_ok", 0),
        counts.get("pairs", 0),
    )
    stages = [
        ("ingest", "records", records, prompts, rejected),
        ("pair", "prompts", prompts, prompts - sum(no_pair.values()), no_pair),
        ("filter", "pairs", pairs + sum(filtered.values()), pairs, filtered),
    ]
    return [
        {
            "stage": s,
            "unit": u,
            "in": n_in,
            "out": n_out,
            "keep_rate": n_out / n_in if n_in else None,
            "dropped_by_reason": dict(reasons),
        }
        for s, u, n_in, n_out, reasons in stages
    ]


def model_costs(counts: dict) -> dict[str, dict]:
    keys = ("responses", "tokens", "gen_seconds", "tokens_per_s", "errors")
    return {m: {k: v.get(k) for k in keys} for m, v in sorted((counts.get("models") or {}).items())}


def histogram(values: list[float], lo: float, hi: float, bins: int) -> dict:
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / width)))] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def summarize(manifest: dict, pairs: list[dict], responses: list[dict]) -> dict:
    """Every number the report and the card show (pure)."""
    counts = manifest.get("counts") or {}
    overall = [r["overall"] for r in responses if r.get("overall") is not None]
    margins = [p["margin"] for p in pairs if p.get("margin") is not None]
    return {
        "name": manifest.get("name"),
        "counts": {k: counts.get(k) for k in ("records_in", "prompts_ok", "responses", "pairs")},
        "table_rows": {"pairs": len(pairs), "responses": len(responses)},
        "overall_hist": histogram(overall, 1.0, 10.0, 18),
        "margin_hist": histogram(margins, 0.0, 9.0, 18),
        "strength": dict(sorted(Counter(int(p.get("strength") or 0) for p in pairs).items())),
        "model_win_rates": model_win_rates(pairs),
        "domains": domain_counts(pairs, responses),
        "judge_agreement": judge_agreement(pairs, vote_exclusions(manifest.get("config") or {})),
        "length_bias": length_bias(pairs, responses),
        "keep_rates": keep_rates(counts),
        "models": model_costs(counts),
        "seconds": manifest.get("seconds"),
        "audit": {
            k: (manifest.get("audit") or {}).get(k)
            for k in ("n", "agreement", "agreement_weighted")
        }
        if manifest.get("audit")
        else None,
    }


# --- reading, rendering, writing ----------------------------------------------------------------


def _normalised(pair: dict) -> dict:
    """Pairs from any writer: scores as dicts, whether from new columns or the meta JSON."""
    out = decode_pair(pair)
    for key in PAIR_SCORE_COLUMNS:
        if out.get(key) is None:
            out[key] = score_dict(out["meta"].get(key))
    return out


def collect(url: str, storage_options: dict | None = None) -> tuple[dict, list[dict], list[dict]]:
    manifest = read_manifest(url, storage_options)
    if manifest is None:
        raise FileNotFoundError(f"{url}: no manifest.json (not a finished prefgen run)")
    pairs = [_normalised(p) for p in read_rows(url, manifest, "pairs", storage_options)]
    responses = read_rows(url, manifest, "responses", storage_options)
    for r in responses:
        r["scores"] = dict(r.get("scores") or {})
    return manifest, pairs, responses


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v if v is not None else "-"))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(data: dict, figures: dict[str, bytes]) -> str:
    """The HTML page (pure): figures inlined as base64 PNG, numbers as tables and JSON."""
    sections = []
    titles = {
        "scores": "Scores and margins",
        "models": "Per-model win rates",
        "domains": "Per-domain counts",
        "agreement": "Judge agreement",
        "length": "Length bias per judge",
        "keep": "Keep rate per stage",
        "costs": "Tokens and time per model",
    }
    tables = {
        "scores": _table(
            [{"strength": k, "pairs": v} for k, v in data["strength"].items()],
            ["strength", "pairs"],
        ),
        "models": _table(
            [{"model": m, **v} for m, v in data["model_win_rates"].items()],
            ["model", "chosen", "rejected", "win_rate"],
        ),
        "domains": _table(
            [{"domain": d, **v} for d, v in data["domains"].items()], ["domain", "prompts", "pairs"]
        ),
        "agreement": _table(
            [{"judges": k, "agreement": v} for k, v in data["judge_agreement"]["pairwise"].items()],
            ["judges", "agreement"],
        ),
        "length": _table(
            [{"judge": j, **v} for j, v in data["length_bias"].items()],
            ["judge", "pairs_decided", "longer_wins", "pearson", "spearman"],
        ),
        "keep": _table(
            [
                {**s, "dropped": ", ".join(f"{k}: {v}" for k, v in s["dropped_by_reason"].items())}
                for s in data["keep_rates"]
            ],
            ["stage", "unit", "in", "out", "keep_rate", "dropped"],
        ),
        "costs": _table(
            [{"model": m, **v} for m, v in data["models"].items()],
            ["model", "responses", "tokens", "gen_seconds", "tokens_per_s", "errors"],
        ),
    }
    for key, title in titles.items():
        img = ""
        if key in figures:
            b64 = base64.b64encode(figures[key]).decode("ascii")
            img = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}">'
        sections.append(
            f"<section id='{key}'><h2>{html.escape(title)}</h2>{img}{tables.get(key, '')}</section>"
        )
    c = data["counts"]
    summary = " · ".join(f"{k.replace('_', ' ')}: {v}" for k, v in c.items())
    payload = json.dumps(data, sort_keys=True, default=str).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prefgen report: {html.escape(str(data["name"]))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ border-bottom: 2px solid #4c72b0; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #eef2f8; }}
</style></head><body>
<h1>prefgen report: {html.escape(str(data["name"]))}</h1>
<p>{html.escape(summary)}</p>
{"".join(sections)}
<script type="application/json" id="report-data">{payload}</script>
</body></html>
"""


def write_report(url: str, storage_options: dict | None = None) -> dict:
    """Write `report.html` and `README.md` into the run; returns the summary data."""
    from prefgen.report.card import dataset_card
    from prefgen.report.plots import render_figures

    manifest, pairs, responses = collect(url, storage_options)
    data = summarize(manifest, pairs, responses)
    page = build_report(data, render_figures(data))
    fs, root = storage.filesystem(url, storage_options)
    storage.write_bytes_atomic(fs, storage.join(root, "report.html"), page.encode("utf-8"))
    card = dataset_card(manifest, data)
    storage.write_bytes_atomic(fs, storage.join(root, "README.md"), card.encode("utf-8"))
    return data
