"""The report's figures: matplotlib PNGs drawn from `report.summarize`'s numbers only.

Drawing from the summary (never from the tables) means each picture shows exactly the
numbers embedded in the page's JSON. Headless Agg backend: no display needed.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BLUE, ORANGE, GREY = "#4c72b0", "#dd8452", "#8c8c8c"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _bars(ax, labels, values, color=BLUE, fmt="{:.0f}"):
    bars = ax.bar([str(x) for x in labels], values, color=color)
    for bar, v in zip(bars, values):
        if v is not None:
            ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.tick_params(axis="x", labelrotation=20)


def _hist(ax, hist: dict, title: str, xlabel: str, color: str) -> None:
    edges, counts = hist["edges"], hist["counts"]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=color, edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")


def scores_figure(data: dict) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    _hist(axes[0], data["overall_hist"], "overall score (responses)", "1-10", BLUE)
    _hist(axes[1], data["margin_hist"], "margin (pairs)", "chosen - rejected", ORANGE)
    strength = data["strength"]
    _bars(axes[2], list(strength), list(strength.values()), GREY)
    axes[2].set_title("strength (HelpSteer3 scale)")
    return _png(fig)


def models_figure(data: dict) -> bytes:
    rates = data["model_win_rates"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    names = list(rates)
    x = range(len(names))
    axes[0].bar(
        [i - 0.2 for i in x], [rates[m]["chosen"] for m in names], 0.4, label="chosen", color=BLUE
    )
    axes[0].bar([i + 0.2 for i in x], [rates[m]["rejected"] for m in names], 0.4, label="rejected", color=ORANGE)  # fmt: skip
    axes[0].set_xticks(list(x), names, rotation=20)
    axes[0].legend()
    axes[0].set_title("pairs per model")
    _bars(axes[1], names, [rates[m]["win_rate"] for m in names], BLUE, "{:.2f}")
    axes[1].set_ylim(0, 1.1)
    axes[1].set_title("win rate = chosen / (chosen + rejected)")
    return _png(fig)


def domains_figure(data: dict) -> bytes:
    domains = data["domains"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(domains)
    x = range(len(names))
    ax.bar(
        [i - 0.2 for i in x],
        [domains[d]["prompts"] for d in names],
        0.4,
        label="prompts",
        color=GREY,
    )
    ax.bar(
        [i + 0.2 for i in x], [domains[d]["pairs"] for d in names], 0.4, label="pairs", color=BLUE
    )
    ax.set_xticks(list(x), names)
    ax.legend()
    ax.set_title("per-domain counts")
    return _png(fig)


def agreement_figure(data: dict) -> bytes:
    agreement = data["judge_agreement"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    pairwise = agreement["pairwise"]
    _bars(
        axes[0], [k.replace("|", " vs ") for k in pairwise], list(pairwise.values()), BLUE, "{:.2f}"
    )
    axes[0].set_ylim(0, 1.1)
    axes[0].set_title("judges ordering a pair the same way")
    shares = agreement["pair_agreement"]
    axes[1].hist(shares, bins=[i / 10 for i in range(11)], color=ORANGE, edgecolor="white")
    axes[1].set_title("share of judges preferring chosen, per pair")
    return _png(fig)


def length_figure(data: dict) -> bytes:
    bias = data["length_bias"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    judges = list(bias)
    _bars(axes[0], judges, [bias[j]["longer_wins"] or 0.0 for j in judges], ORANGE, "{:.2f}")
    axes[0].axhline(0.5, color=GREY, linestyle="--")
    axes[0].set_ylim(0, 1.1)
    axes[0].set_title("longer response preferred (0.5 = no bias)")
    x = range(len(judges))
    axes[1].bar([i - 0.2 for i in x], [bias[j]["pearson"] or 0.0 for j in judges], 0.4, label="Pearson", color=BLUE)  # fmt: skip
    axes[1].bar([i + 0.2 for i in x], [bias[j]["spearman"] or 0.0 for j in judges], 0.4, label="Spearman", color=GREY)  # fmt: skip
    axes[1].set_xticks(list(x), judges, rotation=20)
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylim(-1, 1)
    axes[1].legend()
    axes[1].set_title("correlation of score with length (characters)")
    return _png(fig)


def keep_figure(data: dict) -> bytes:
    stages = data["keep_rates"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    _bars(axes[0], [s["stage"] for s in stages], [s["keep_rate"] or 0.0 for s in stages], BLUE, "{:.2f}")  # fmt: skip
    axes[0].set_ylim(0, 1.1)
    axes[0].set_title("keep rate per stage")
    reasons = [(f"{s['stage']}: {r}", n) for s in stages for r, n in s["dropped_by_reason"].items()]
    if reasons:
        axes[1].barh([r for r, _ in reasons], [n for _, n in reasons], color=ORANGE)
    axes[1].set_title("dropped, by stage and reason")
    return _png(fig)


def costs_figure(data: dict) -> bytes:
    models = data["models"]
    names = list(models)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, key, color in zip(
        axes, ("tokens", "gen_seconds", "tokens_per_s"), (BLUE, ORANGE, GREY)
    ):
        _bars(
            ax,
            names,
            [models[m][key] or 0 for m in names],
            color,
            "{:.0f}" if key == "tokens" else "{:.1f}",
        )
        ax.set_title(key.replace("_", " "))
    return _png(fig)


FIGURES = {
    "scores": scores_figure,
    "models": models_figure,
    "domains": domains_figure,
    "agreement": agreement_figure,
    "length": length_figure,
    "keep": keep_figure,
    "costs": costs_figure,
}


def render_figures(data: dict) -> dict[str, bytes]:
    """Every figure that has data to show (judge agreement needs two judges)."""
    figures = {}
    for key, draw in FIGURES.items():
        if key == "agreement" and not data["judge_agreement"]["pairwise"]:
            continue
        figures[key] = draw(data)
    return figures
