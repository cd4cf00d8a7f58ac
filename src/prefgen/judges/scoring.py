"""Scoring stage without a model: math verifier, hard-rule caps, ensemble, `overall`.

Input: prompt rows whose responses carry judge scores. Output, per response:
* `scores[<verifier name>]` (0/1, math prompts with a reference only) with its rationale;
* hard-rule caps: a rubric's checkable rule ("a wrong final answer scores at most 5") caps
  that judge's score when the verifier marks the answer wrong (`judge_status` "capped", the
  uncapped value in `rationales["<score>.hard_rule"]`);
* `scores[<ensemble name>]`: the ensemble's aggregate of its members (each rescaled to 1-10),
  with the judges' agreement on the prompt in the row's `agreement`;
* `overall`: the configured weighted mean of its scores, each first rescaled to 1-10, so the
  pairing margin (default 2 on 1-10, COIG-P) means the same whichever scorers are on; on a
  prompt the reward model settled (`prefgen.judges.route`), the reward itself.

`scoring_options(cfg)` builds every keyword argument `score_rows` takes from the config.
"""

from __future__ import annotations

import math

from prefgen.config import EnsembleConfig, MathVerifierConfig, PipelineConfig
from prefgen.data.rows import is_ok
from prefgen.judges.aggregate import ensemble_score, judge_agreement, overall_score
from prefgen.judges.math_verifier import verify_math
from prefgen.judges.names import judge_score_names, score_scales
from prefgen.judges.route import BY_REWARD
from prefgen.judges.route import SCORE_NAME as REWARD_SCORE

# score name -> {domain (lower case) or "default" -> cap, or None for "no cap there"}
Caps = dict[str, dict[str, float | None]]


def verifier_caps(cfg: PipelineConfig) -> Caps:
    """Where each judge's rubric has a checkable hard rule, per domain (pure, from config)."""
    from prefgen.judges.custom_rubrics import rubric_for

    caps: Caps = {}
    for j in cfg.judge.llm:
        if j.kind not in ("pointwise", "listwise"):
            continue  # win rates and log ratios are not on the rubric's scale
        choices = {
            "default": rubric_for(j),
            **{d.strip().lower(): rubric_for(j, d) for d in j.rubric_by_domain},
        }
        for domain, rubric in choices.items():
            for aspect, name in zip(rubric.aspects, judge_score_names(j.name, rubric.aspects)):
                caps.setdefault(name, {})[domain] = rubric.verifier_caps.get(aspect)
    return {
        name: by_domain
        for name, by_domain in caps.items()
        if any(v is not None for v in by_domain.values())
    }


def apply_verifier_caps(
    scores: dict[str, float | None], caps: Caps, domain: str | None, verifier_passed: bool | None
) -> dict[str, tuple[float, float]]:
    """Cap scores whose rubric has a hard rule when the verifier failed the response.

    Returns {score name: (uncapped, cap)} for the scores it lowered; `scores` is changed in
    place. Nothing happens when the verifier did not run or passed the response.
    """
    if verifier_passed is not False:
        return {}
    key = (domain or "").strip().lower()
    lowered = {}
    for name, by_domain in caps.items():
        cap = by_domain[key] if key in by_domain else by_domain.get("default")
        value = scores.get(name)
        if cap is None or value is None or not math.isfinite(float(value)):
            continue
        if value > cap:
            scores[name] = float(cap)
            lowered[name] = (float(value), float(cap))
    return lowered


def score_row(
    row: dict,
    verifier: MathVerifierConfig,
    weights: dict[str, float],
    scales: dict[str, tuple[float, float]],
    ensemble: EnsembleConfig | None = None,
    caps: Caps | None = None,
) -> dict:
    if not is_ok(row):
        return row
    check_math = verifier.enabled and row["reference"] and row["domain"] in verifier.domains
    for response in row["responses"]:
        passed = None
        if check_math and not response["finish_reason"].startswith("error"):
            score, why = verify_math(
                response["text"], row["reference"], verifier.rel_tol, verifier.abs_tol
            )
            if score is not None:
                response["scores"][verifier.name] = score
                response["rationales"][verifier.name] = why
                response["judge_status"][verifier.name] = "ok"
                passed = score > 0
        lowered = apply_verifier_caps(response["scores"], caps or {}, row["domain"], passed)
        for name, (value, cap) in lowered.items():
            response["judge_status"][name] = "capped"
            response["rationales"][f"{name}.hard_rule"] = (
                f"{verifier.name} verifier: wrong answer; score {value:g} capped at {cap:g}"
            )
        if ensemble is not None and ensemble.members:
            response["scores"][ensemble.name] = ensemble_score(
                response["scores"], ensemble.members, scales, ensemble.aggregation, ensemble.trim
            )
            response["judge_status"][ensemble.name] = (
                "ok" if response["scores"][ensemble.name] is not None else "no_score"
            )
        response["overall"] = (
            response["scores"].get(REWARD_SCORE)
            if row.get("route") == BY_REWARD
            else overall_score(response["scores"], weights, scales)
        )
    if ensemble is not None and ensemble.members and row["responses"]:
        per_judge = {
            m: [r["scores"].get(m) for r in row["responses"]]
            for m in dict.fromkeys(ensemble.members)
        }
        row["agreement"] = [a for a in row["agreement"] if a["name"] != ensemble.name]
        row["agreement"].append({"name": ensemble.name, **judge_agreement(per_judge)})
    return row


def default_weights(
    scales: dict[str, tuple[float, float]], ensemble: EnsembleConfig | None
) -> dict[str, float]:
    """Equal weights; with an ensemble, its aggregate stands in for its members."""
    members = set(ensemble.members) if ensemble is not None else set()
    return {name: 1.0 for name in scales if name not in members}


def score_rows(
    rows: list[dict],
    verifier: MathVerifierConfig,
    weights: dict[str, float],
    scales: dict,
    ensemble: EnsembleConfig | None = None,
    caps: Caps | None = None,
) -> list[dict]:
    """Row stage: `score_row` over a batch, with default weights when none are configured."""
    effective = weights or default_weights(scales, ensemble)
    return [score_row(r, verifier, effective, scales, ensemble, caps) for r in rows]


def scoring_options(cfg: PipelineConfig) -> dict:
    """Every keyword argument of `score_rows`, from the config (for `partial(score_rows, ...)`)."""
    return {
        "verifier": cfg.judge.math_verifier,
        "weights": dict(cfg.judge.weights),
        "scales": score_scales(cfg),
        "ensemble": cfg.judge.ensemble if cfg.judge.ensemble.members else None,
        "caps": verifier_caps(cfg),
    }
