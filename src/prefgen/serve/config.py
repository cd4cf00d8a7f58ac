"""The endpoint's settings: one validated object from `prefgen serve` flags, `serve run` args or YAML."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from ray.serve.config import BackpressureConfig

from prefgen.serve.api import Limits


@dataclass(config=ConfigDict(extra="forbid"))
class ServeConfig:
    """Everything the endpoint needs; `build_app` builds it from `serve run` args or YAML.

    Values arriving as strings (`serve run prefgen.serve:build_app max_items=64`) are
    converted; unknown keys and out-of-range values fail with a message naming the key.
    """

    model: str = Field(description="Saved reward model: local dir or any fsspec URL.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for the model URL."
    )
    host: str = Field(default="127.0.0.1", description="HTTP host (prefgen serve only).")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port (prefgen serve).")
    max_batch_size: int = Field(default=32, ge=1, description="Items per forward pass.")
    batch_wait_timeout_s: float = Field(
        default=0.01, ge=0, description="Longest wait for a batch to fill."
    )
    # Request limits (413 unless said): checked before any tokenizing, see api.Limits
    max_items: int = Field(default=256, ge=1, description="Pairs scored per request.")
    max_texts: int = Field(
        default=4096,
        ge=1,
        description="Texts tokenized per request: messages and responses, a prompt once per "
        "response scored with it.",
    )
    max_chars: int = Field(default=20000, ge=1, description="Characters per text (422).")
    max_total_chars: int = Field(
        default=2_000_000, ge=1, description="Characters tokenized per request, counted so."
    )
    max_body_mb: float = Field(
        default=16.0, gt=0, description="Body size, checked before parsing (chunked too)."
    )
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Requests in flight per replica; >= max_batch_size."
    )
    max_queued_requests: int = Field(
        default=128, ge=-1, description="Queued at the proxy before 503; -1 = unbounded."
    )
    retry_after_s: float | None = Field(
        default=1.0, ge=0, description="Retry-After on 503 (backpressure); None: no header."
    )
    num_replicas: int = Field(default=1, ge=1, description="Fixed replica count.")
    autoscaling: dict[str, Any] | None = Field(
        default=None, description="Serve autoscaling_config; replaces num_replicas when set."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (cuda if > 0).")
    num_threads: int | None = Field(
        default=None, ge=1, description="torch threads; None: max(1, int(num_cpus))."
    )
    auth_token_env: str | None = Field(
        default=None, description="Env var (in the replica) holding the bearer token."
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None, description="Ray runtime_env for replicas (e.g. env_vars)."
    )
    graceful_shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="Keep above the p99 request latency."
    )
    health_check_period_s: float = Field(
        default=10.0, gt=0, description="Serve calls check_health (a forward pass) this often."
    )

    @field_validator("storage_options", "autoscaling", "runtime_env", mode="before")
    @classmethod
    def _json_string(cls, value):
        # `serve run ... autoscaling='{"max_replicas": 4}'` passes a string
        return json.loads(value) if isinstance(value, str) else value

    def __post_init__(self):
        # every pair tokenizes at least its response, and one text at max_chars must fit
        if self.max_texts < self.max_items:
            raise ValueError(
                f"max_texts ({self.max_texts}) must be >= max_items ({self.max_items})"
            )
        if self.max_total_chars < self.max_chars:
            raise ValueError(
                f"max_total_chars ({self.max_total_chars}) must be >= max_chars ({self.max_chars})"
            )
        if self.max_ongoing_requests < self.max_batch_size:
            # @serve.batch can never fill a batch bigger than the requests a replica admits
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= "
                f"max_batch_size ({self.max_batch_size})"
            )

    def limits(self) -> Limits:
        return Limits(
            max_items=self.max_items,
            max_texts=self.max_texts,
            max_chars=self.max_chars,
            max_total_chars=self.max_total_chars,
        )

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for `RewardServer.options(...)`."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.runtime_env:
            actor["runtime_env"] = self.runtime_env
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": BackpressureConfig(
                status_code=503, retry_after_s=self.retry_after_s
            ),
            "ray_actor_options": actor,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "health_check_period_s": self.health_check_period_s,
        }
        if self.autoscaling:
            options["autoscaling_config"] = self.autoscaling
        else:
            options["num_replicas"] = self.num_replicas
        return options
