"""vLLM on GPUs through Ray's own `ray.data.llm` processor: a thin adapter, tested up to its boundary.

`vllm_processor_kwargs` translates a prefgen `ModelConfig` into the arguments of
`vLLMEngineProcessorConfig` (tensor/pipeline parallelism, accelerator type, fixed or autoscaling
concurrency, batch size); `apply_vllm_generation` splices the processor into the pipeline with
pre/post-processing that keep prefgen's one-row-per-prompt shape. vLLM itself only installs on
GPU machines (`pip install prefgen[gpu]`); everything up to `build_processor` runs without it.
"""

from __future__ import annotations

import json
from typing import Any

from prefgen.config import ModelConfig
from prefgen.rows import stable_seed


def vllm_processor_kwargs(model: ModelConfig) -> dict[str, Any]:
    engine_kwargs = {
        "tensor_parallel_size": model.tensor_parallel_size,
        "pipeline_parallel_size": model.pipeline_parallel_size,
        "max_model_len": model.max_model_len,
        **model.engine_kwargs,
    }
    if model.dtype != "auto":
        engine_kwargs.setdefault("dtype", model.dtype)
    concurrency: int | tuple[int, int] = model.concurrency
    if model.max_concurrency and model.max_concurrency > model.concurrency:
        concurrency = (model.concurrency, model.max_concurrency)  # autoscale between min and max
    kwargs: dict[str, Any] = {
        "model_source": model.path,
        "engine_kwargs": engine_kwargs,
        "concurrency": concurrency,
        "batch_size": model.batch_size,
        "should_continue_on_error": True,  # a bad row becomes an error row, not a failed job
    }
    if model.accelerator_type:
        kwargs["accelerator_type"] = model.accelerator_type
    return kwargs


def sampling_params(model: ModelConfig, seed: int) -> dict[str, Any]:
    params = {
        "temperature": model.temperature,
        "top_p": model.top_p,
        "max_tokens": model.max_tokens,
        "seed": seed,
    }
    if model.top_k:
        params["top_k"] = model.top_k
    return params


def preprocess_row(row: dict, model: ModelConfig, seed: int, sample: int) -> dict:
    """Prompt row -> vLLM request. The processor reads `messages` (a list); prefgen's JSON
    `messages` column rides along as `prompt_messages` and is restored by `postprocess_row`."""
    from prefgen.generate import with_system_prompt

    messages = json.loads(row["messages"]) if row["messages"] else []
    return {
        **row,
        "prompt_messages": row["messages"],
        "messages": with_system_prompt(messages, model.system_prompt)
        or [{"role": "user", "content": ""}],
        "sampling_params": sampling_params(model, stable_seed(seed, row["id"], model.name, sample)),
    }


def postprocess_row(row: dict, model: ModelConfig, sample: int) -> dict:
    """vLLM output -> the prompt row with one more response appended (rejected rows untouched)."""
    from prefgen.schema import ROW_SCHEMA

    engine_messages = row["messages"]
    out = {k: row.get(k) for k in ROW_SCHEMA.names}
    out["messages"] = row["prompt_messages"]
    if row["status"] != "ok":
        return out
    error = row.get("__inference_error__")
    responses = json.loads(row["responses"] or "[]")
    messages = list(engine_messages)
    responses.append(
        {
            "model": model.name,
            "sample": sample,
            "text": "" if error else (row.get("generated_text") or "").strip(),
            "finish_reason": f"error: {error}"
            if error
            else ("length" if row.get("num_generated_tokens", 0) >= model.max_tokens else "stop"),
            "n_tokens": int(row.get("num_generated_tokens") or 0),
            "system_prompt": messages[0]["content"]
            if messages and messages[0]["role"] == "system"
            else None,
            "gen_seconds": None,
            "scores": {},
            "rationales": {},
            "judge_status": {},
            "overall": None,
        }
    )
    out["responses"] = json.dumps(responses, ensure_ascii=False)
    return out


def apply_vllm_generation(ds, model: ModelConfig, seed: int):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(**vllm_processor_kwargs(model))
    for sample in range(model.samples_per_prompt):
        processor = build_processor(
            config,
            preprocess=lambda row, s=sample: preprocess_row(row, model, seed, s),
            postprocess=lambda row, s=sample: postprocess_row(row, model, s),
        )
        ds = processor(ds)
    return ds
