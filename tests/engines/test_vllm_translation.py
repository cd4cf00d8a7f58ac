"""The vLLM adapter up to its boundary: our config -> ray.data.llm's processor config."""

from __future__ import annotations

import json

from prefgen.config import ModelConfig
from prefgen.engines.vllm import (
    postprocess_row,
    preprocess_row,
    sampling_params,
    vllm_processor_kwargs,
)


def _model(**kw) -> ModelConfig:
    base = dict(
        name="big",
        engine="vllm",
        path="s3://models/llama-8b",
        max_tokens=64,
        temperature=0.7,
        top_p=0.9,
        top_k=0,
    )
    return ModelConfig(**{**base, **kw})


def test_tensor_parallel_and_accelerator_reach_the_processor_config():
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs = vllm_processor_kwargs(
        _model(
            tensor_parallel_size=4,
            pipeline_parallel_size=2,
            accelerator_type="H100",
            batch_size=32,
            concurrency=2,
        )
    )
    config = vLLMEngineProcessorConfig(**kwargs)  # the real class validates the translation
    assert config.engine_kwargs["tensor_parallel_size"] == 4
    assert config.engine_kwargs["pipeline_parallel_size"] == 2
    assert config.accelerator_type == "H100"
    assert config.batch_size == 32
    assert config.model_source == "s3://models/llama-8b"
    assert config.should_continue_on_error is True


def test_autoscaling_concurrency_is_a_min_max_pair():
    from ray.data.llm import vLLMEngineProcessorConfig

    fixed = vllm_processor_kwargs(_model(concurrency=3))
    scaling = vllm_processor_kwargs(_model(concurrency=1, max_concurrency=4))
    assert fixed["concurrency"] == 3
    assert scaling["concurrency"] == (1, 4)
    assert vLLMEngineProcessorConfig(**scaling).concurrency == (1, 4)


def test_engine_kwargs_pass_through_and_max_model_len():
    kwargs = vllm_processor_kwargs(
        _model(max_model_len=8192, engine_kwargs={"gpu_memory_utilization": 0.85})
    )
    assert kwargs["engine_kwargs"]["max_model_len"] == 8192
    assert kwargs["engine_kwargs"]["gpu_memory_utilization"] == 0.85


def test_pre_and_post_processing_keep_one_row_per_prompt():
    model = _model(system_prompt="Be brief.")
    row = {
        "id": "p1",
        "status": "ok",
        "messages": json.dumps([{"role": "user", "content": "Hi"}]),
        "responses": "[]",
    }
    request = preprocess_row(row, model, seed=0, sample=0)
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["sampling_params"] == sampling_params(model, request["sampling_params"]["seed"])
    assert (
        request["sampling_params"]["seed"]
        == preprocess_row(row, model, seed=0, sample=0)["sampling_params"]["seed"]
    )
    assert (
        request["sampling_params"]["seed"]
        != preprocess_row(row, model, seed=0, sample=1)["sampling_params"]["seed"]
    )
    out = postprocess_row(
        {**request, "generated_text": " Hello! ", "num_generated_tokens": 3}, model, sample=0
    )
    assert json.loads(out["messages"]) == [{"role": "user", "content": "Hi"}]
    (response,) = json.loads(out["responses"])
    assert (
        response["text"] == "Hello!"
        and response["model"] == "big"
        and response["system_prompt"] == "Be brief."
    )
    failed = postprocess_row(
        {**request, "__inference_error__": "prompt too long", "generated_text": None},
        model,
        sample=0,
    )
    assert json.loads(failed["responses"])[0]["finish_reason"].startswith("error")
