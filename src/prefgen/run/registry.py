"""The pipeline's stages, listed in one place, and the pipeline config loader that checks them.

`load_pipeline(path, overrides)` is how every command reads a pipeline config: the types and
ranges of `prefgen.config`, then each stage family's own checks (below), all before Ray starts.
"""

from __future__ import annotations

from pathlib import Path

from prefgen.config import PipelineConfig, load
from prefgen.judges.checks import check_judges

CHECKS = (check_judges,)


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """YAML pipeline config + `key=value` overrides -> a validated PipelineConfig."""
    return load(path, overrides, PipelineConfig, CHECKS)
