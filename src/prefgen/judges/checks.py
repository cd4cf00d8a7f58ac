"""Config checks that need the judges' own knowledge: rubrics that exist and build, per-domain
rubrics that score alike, weights and ensemble members that name real scores.

Run by the pipeline loader (`prefgen.run.registry.load_pipeline`) after the config's types
and ranges passed; each problem is a (dotted key, message) pair.
"""

from __future__ import annotations

from collections.abc import Iterator

from prefgen.config import PipelineConfig
from prefgen.judges.custom_rubrics import RubricSpecError, build_rubric, rubric_for
from prefgen.judges.names import judge_score_names, score_scales
from prefgen.judges.rubrics import RUBRICS


def check_judges(cfg: PipelineConfig) -> Iterator[tuple[str, str]]:
    for name, spec in cfg.judge.rubrics.items():
        key = f"judge.rubrics.{name}"
        if name in RUBRICS:
            yield key, f"{name!r} is a built-in rubric; pick another name (base: {name} extends it)"
            continue
        try:
            build_rubric(name, spec)
        except RubricSpecError as exc:
            yield f"{key}.{exc.field}", str(exc)
    known = sorted({*RUBRICS, *cfg.judge.rubrics})
    for i, j in enumerate(cfg.judge.llm):
        key = f"judge.llm.{i}"
        if j.rubric not in known:
            yield f"{key}.rubric", f"unknown rubric {j.rubric!r}; known: {', '.join(known)}"
            continue
        try:
            default = rubric_for(j)
        except RubricSpecError:
            continue  # reported above under judge.rubrics
        for domain, name in j.rubric_by_domain.items():
            if name not in known:
                yield (
                    f"{key}.rubric_by_domain.{domain}",
                    f"unknown rubric {name!r}; known: {', '.join(known)}",
                )
                continue
            try:
                rubric = rubric_for(j, domain)
            except RubricSpecError:
                continue
            same = judge_score_names(j.name, rubric.aspects) == judge_score_names(
                j.name, default.aspects
            )
            if not same or rubric.scale != default.scale:
                yield (
                    f"{key}.rubric_by_domain.{domain}",
                    f"rubric {name!r} must give the same scores and scale as {j.rubric!r}",
                )
    scores = set(score_scales(cfg))
    if not scores:
        yield "judge", "no scorer configured: add judge.llm entries or enable judge.math_verifier"
    for name in cfg.judge.weights:
        if name not in scores:
            yield (
                f"judge.weights.{name}",
                f"no scorer produces it; scores: {', '.join(sorted(scores))}",
            )
    ens = cfg.judge.ensemble
    if ens.members:
        members_known = set(score_scales(cfg, with_ensemble=False))
        if ens.name in members_known:
            yield "judge.ensemble.name", f"{ens.name!r} is already a score name"
        for member in ens.members:
            if member not in members_known:
                yield (
                    "judge.ensemble.members",
                    f"no scorer produces {member!r}; scores: {', '.join(sorted(members_known))}",
                )
