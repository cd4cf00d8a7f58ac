"""Typed configuration, one module per section, and the one loader that fills them.

`load(path, overrides, schema, checks)` is the loader every command uses (`prefgen run`,
`submit`, `train-rm`, ...); `prefgen.run.registry.load_pipeline` adds the stages' own checks
for pipeline configs. `to_dict` is what a manifest records, `config_hash` a run's identity.
"""

from prefgen.config.base import INPUT_SUFFIXES, LIGHT_TASK_CPUS, ConfigError, Section
from prefgen.config.generate import GenerateConfig
from prefgen.config.ingest import (
    DomainTaggerConfig,
    IngestConfig,
    InputConfig,
    NearDupConfig,
    QualityFilterConfig,
    SourceConfig,
)
from prefgen.config.judge import (
    CodeVerifierConfig,
    EnsembleConfig,
    JudgeConfig,
    LLMJudgeConfig,
    MathVerifierConfig,
    RubricConfig,
)
from prefgen.config.loader import config_hash, load, to_dict
from prefgen.config.models import ModelConfig
from prefgen.config.pipeline import (
    ExecutionConfig,
    FilterConfig,
    OutputConfig,
    PairingConfig,
    PipelineConfig,
    RayConfig,
    RouteConfig,
)
from prefgen.config.reward import RewardTrainConfig

__all__ = [
    "INPUT_SUFFIXES",
    "LIGHT_TASK_CPUS",
    "CodeVerifierConfig",
    "ConfigError",
    "DomainTaggerConfig",
    "EnsembleConfig",
    "ExecutionConfig",
    "FilterConfig",
    "GenerateConfig",
    "IngestConfig",
    "InputConfig",
    "JudgeConfig",
    "LLMJudgeConfig",
    "MathVerifierConfig",
    "ModelConfig",
    "NearDupConfig",
    "OutputConfig",
    "PairingConfig",
    "PipelineConfig",
    "QualityFilterConfig",
    "RayConfig",
    "RewardTrainConfig",
    "RouteConfig",
    "RubricConfig",
    "Section",
    "SourceConfig",
    "config_hash",
    "load",
    "to_dict",
]
