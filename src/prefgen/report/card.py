"""The run's dataset card (`README.md`, Hugging Face style: YAML header, then prose).

Written from the manifest and `report.summarize`'s numbers, so the card's counts, models,
judges, method and known biases are the run's own, not boilerplate. The license is a
placeholder on purpose: it depends on the prompts' and the generator models' terms, which
prefgen cannot know.
"""

from __future__ import annotations

from prefgen.data.schema import PAIR_SCHEMA

# What each pairs column means, for the card's column table.
COLUMN_DOCS = {
    "id": "stable pair id (prompt + both responses)",
    "prompt_id": "stable prompt id",
    "prompt": "conversation so far, a list of {role, content}",
    "chosen": "preferred assistant turn(s), a list of {role, content}",
    "rejected": "dispreferred assistant turn(s)",
    "chosen_score": "overall score of chosen, 1-10",
    "rejected_score": "overall score of rejected, 1-10",
    "margin": "chosen_score - rejected_score",
    "chosen_model": "generator of chosen",
    "rejected_model": "generator of rejected",
    "domain": "prompt domain",
    "judge": "scorers behind the overall score",
    "strategy": "pairing strategy",
    "meta": "JSON: samples, system prompts, per-score breakdown, prompt meta",
    "rm_margin": "reward-model margin, when the reward-model filter ran",
    "chosen_scores": "per-judge scores of chosen, native scales",
    "rejected_scores": "per-judge scores of rejected",
    "strength": "HelpSteer3-style -3..+3; > 0 means chosen is better",
    "judge_agreement": "share of judges preferring chosen (ties count half)",
    "routing_score": "0-1, how much the pair needs a human check",
    "label_source": "judge, or human after an audit merge",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _judges(config: dict) -> list[str]:
    judge = config.get("judge") or {}
    names = [f"{j.get('name')} (rubric {j.get('rubric')})" for j in judge.get("llm") or []]
    for key in ("math_verifier", "code_verifier"):
        if (judge.get(key) or {}).get("enabled"):
            names.append(f"{judge[key].get('name')} ({key.replace('_', ' ')})")
    return names


def bias_notes(data: dict) -> list[str]:
    """Plain-language findings from the length-bias numbers (pure)."""
    notes = []
    for judge, b in data["length_bias"].items():
        wins, rho = b.get("longer_wins"), b.get("spearman")
        if wins is None and rho is None:
            continue
        lean = ""
        if wins is not None and abs(wins - 0.5) >= 0.1:
            lean = " - prefers " + ("longer" if wins > 0.5 else "shorter") + " responses"
        wins_text = "-" if wins is None else f"{wins:.2f}"
        rho_text = "-" if rho is None else f"{rho:+.2f}"
        notes.append(
            f"`{judge}`: the longer response wins {wins_text} of decided pairs "
            f"({b['pairs_decided']}); Spearman(score, length) = {rho_text}{lean}"
        )
    return notes


def dataset_card(manifest: dict, data: dict) -> str:
    config = manifest.get("config") or {}
    pairing = config.get("pairing") or {}
    filt = config.get("filter") or {}
    counts = data["counts"]
    models = list(data["models"])
    judges = _judges(config)
    n_pairs = counts.get("pairs") or 0
    header = "\n".join(
        [
            "---",
            "license: other  # placeholder: set it from your prompts' and generators' terms",
            f"pretty_name: {manifest.get('name')}",
            "tags: [preference, dpo, rlhf, synthetic, prefgen]",
            "task_categories: [text-generation]",
            f"size_categories: [{_size_category(n_pairs)}]",
            "configs:",
            "  - config_name: default",
            "    data_files:",
            "      - split: train",
            "        path: pairs/*.parquet",
            "---",
        ]
    )
    columns = "\n".join(
        f"| `{f.name}` | {f.type} | {COLUMN_DOCS.get(f.name, '')} |" for f in PAIR_SCHEMA
    )
    keep = "\n".join(
        f"| {s['stage']} | {s['in']} | {s['out']} | {_rate(s['keep_rate'])} |"
        for s in data["keep_rates"]
    )
    win = "\n".join(
        f"| {m} | {v['chosen']} | {v['rejected']} | {v['win_rate']:.3f} |"
        for m, v in data["model_win_rates"].items()
    )
    biases = "\n".join(f"- {n}" for n in bias_notes(data)) or "- none measured"
    audit = data.get("audit")
    audit_line = (
        f"A human audit of {audit['n']} pairs agreed with the judges on "
        f"{audit['agreement']:.1%} of them (re-weighted: {audit['agreement_weighted']:.1%})."
        if audit and audit.get("n")
        else "No human audit has been merged yet (`prefgen audit export` / `merge`)."
    )
    return f"""{header}

# {manifest.get("name")}

Preference pairs generated by prefgen (run finished
{manifest.get("finished_at")}, config hash `{manifest.get("config_hash")}`): prompts answered by
several models, each answer scored by LLM judges and verifiers, pairs chosen from the scores.
TRL's conversational preference format: `prompt`, `chosen`, `rejected` as message lists.

## Counts

| records in | prompts | responses | pairs |
|---|---|---|---|
| {counts.get("records_in")} | {counts.get("prompts_ok")} | {counts.get("responses")} | {n_pairs} |

| stage | in | out | keep rate |
|---|---|---|---|
{keep}

Per domain: {", ".join(f"{d} {v['pairs']} pairs / {v['prompts']} prompts" for d, v in data["domains"].items())}.

## Models

{", ".join(f"`{m}`" for m in models) or "-"}

| model | chosen | rejected | win rate |
|---|---|---|---|
{win}

## Judges

{", ".join(judges) or "-"}; the `overall` score is their weighted mean on a 1-10 scale.

## Method

Pairing strategy `{pairing.get("strategy")}` (min margin {pairing.get("min_margin")},
min chosen score {pairing.get("min_chosen_score")}, max pairs per prompt
{pairing.get("max_pairs_per_prompt")}, max length ratio {pairing.get("max_length_ratio")},
min judge agreement {pairing.get("min_judge_agreement")}); reward-model filter:
{filt.get("kind", "none")}. {audit_line}

## Columns

| column | type | meaning |
|---|---|---|
{columns}

## Known biases

Length (characters) against judge preference:

{biases}

Pairs come from LLM judges; judges favour outputs resembling their own and can be
manipulated (COIG-P, arXiv:2504.05535; Anyprefer, arXiv:2504.19276; Li et al., "Dissecting Human and LLM Preferences", arXiv:2402.11296). Audit a sample before training on it.

## License

Placeholder: set the license that the prompts' sources and the generator models allow.
"""
