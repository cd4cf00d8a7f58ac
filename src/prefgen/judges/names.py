"""Which score names the configured scorers write, and on which native scale.

Scoring rescales every score onto 1-10 before combining, pairing compares within a judge,
and config checks refuse weights for scores nobody writes: all of them ask here.
"""

from __future__ import annotations

from prefgen.config import LLMJudgeConfig, PipelineConfig
from prefgen.judges.custom_rubrics import rubric_for

Scale = tuple[float, float]


def judge_score_names(judge_name: str, aspects: tuple[str, ...]) -> list[str]:
    """A one-aspect rubric scores under the judge's name; a multi-aspect one as NAME.aspect."""
    if len(aspects) == 1:
        return [judge_name]
    return [f"{judge_name}.{a}" for a in aspects]


def judge_scales(j: LLMJudgeConfig) -> dict[str, Scale]:
    """The score names one LLM judge writes, with their native scales.

    pointwise / listwise: the rubric's aspects on its scale; pairwise: one win rate on 0-1;
    cdr: one log-density ratio, nominally on ``cdr_range``. An unknown rubric: none.
    """
    if j.kind == "pairwise":
        return {j.name: (0.0, 1.0)}
    if j.kind == "cdr":
        return {j.name: (float(j.cdr_range[0]), float(j.cdr_range[-1]))}
    try:
        rubric = rubric_for(j)
    except ValueError:  # RubricSpecError too: the checks name the key; callers get no scores
        return {}
    scale = (float(rubric.scale[0]), float(rubric.scale[1]))
    return {name: scale for name in judge_score_names(j.name, rubric.aspects)}


def score_scales(cfg: PipelineConfig, with_ensemble: bool = True) -> dict[str, Scale]:
    """Every score name the configured scorers produce, with its native scale."""
    scales: dict[str, Scale] = {}
    for j in cfg.judge.llm:
        scales.update(judge_scales(j))
    if cfg.judge.math_verifier.enabled:
        scales[cfg.judge.math_verifier.name] = (0.0, 1.0)
    if cfg.judge.code_verifier.enabled:
        scales[cfg.judge.code_verifier.name] = (0.0, 1.0)  # share of tests passed
    if with_ensemble and cfg.judge.ensemble.members:
        scales[cfg.judge.ensemble.name] = (1.0, 10.0)  # members are rescaled to 1-10 first
    return scales
