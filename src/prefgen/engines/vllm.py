"""vLLM on GPUs through Ray's own `ray.data.llm` processor: a thin adapter, tested up to its boundary.

`vllm_processor_kwargs` translates a prefgen `ModelConfig` into `vLLMEngineProcessorConfig`
arguments: tensor/pipeline parallelism, accelerator type, a fixed or autoscaling pool, batch
size, and weights from object storage. `apply_vllm_generation` and `apply_vllm_judging` splice
processors into the pipeline and keep prefgen's one-row-per-prompt shape. vLLM itself only
installs on GPU machines (`pip install prefgen[gpu]`); everything up to `build_processor` runs
without it, and the pre/post-processing are pure functions tested directly.

Two shapes:
* one request per prompt row (generation with `samples_per_prompt: 1`): preprocess the row,
  postprocess it back; the stage streams.
* several requests per row (more samples; judging: one per response, aspect and mode): the row
  fans out into request rows, the first carrying the whole prompt row as JSON, one processor
  (one set of engines) serves them all, and `groupby(key).map_groups` folds the answers back.
  The groupby is a barrier: the stage finishes before the next one starts (phased mode runs
  that way anyway). One processor per sample would load the model once per sample.

Error rows (`should_continue_on_error`) skip the processor's postprocess in Ray 2.60, so every
processor is followed by a map that turns them into error responses like the transformers path.

Weights from object storage: `path: s3://bucket/model` (also gs://, abfss://) goes to
`model_source` as is. By default Ray downloads the files to each node's disk before vLLM starts;
with `engine_kwargs: {load_format: runai_streamer}` only config and tokenizer are downloaded and
vLLM streams the safetensors from S3 into GPU memory (needs `vllm[runai]`). An S3-compatible
endpoint (`AWS_ENDPOINT_URL[_S3]` on the driver) is passed to the engine actors through
`runtime_env`; credentials are not (runtime_env is visible in the dashboard): give the nodes an
IAM role or export them there.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

from prefgen.config import LLMJudgeConfig, ModelConfig
from prefgen.data.rows import stable_seed
from prefgen.engines.top_logprobs import label_probabilities_from_steps
from prefgen.judges.names import judge_score_names

REMOTE_SCHEMES = ("s3://", "gs://", "abfss://")
STREAMING_LOAD_FORMATS = ("runai_streamer", "runai_streamer_sharded", "tensorizer")
JUDGE_TOP_LOGPROBS = 20  # vLLM's default max_logprobs
# Light pre/post maps reserve a quarter CPU, like prefgen's other light tasks, so they never
# wait behind the CPUs that the engine actors hold.
_LIGHT_CPUS = 0.25
_KEY, _ROW, _ITEM, _RESULT = "fan_key", "fan_row", "fan_item", "fan_result"


# -- configuration ----------------------------------------------------------------------------


def vllm_processor_kwargs(
    model: ModelConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    if model.path.startswith("package:"):
        raise ValueError(
            f"model {model.name!r}: vllm needs an HF id, a local HF directory or an "
            f"s3:// / gs:// URI, not {model.path!r}"
        )
    engine_kwargs = {
        "tensor_parallel_size": model.tensor_parallel_size,
        "pipeline_parallel_size": model.pipeline_parallel_size,
        **model.engine_kwargs,
    }
    if model.max_model_len is not None:
        engine_kwargs.setdefault("max_model_len", model.max_model_len)
    if model.dtype != "auto":
        engine_kwargs.setdefault("dtype", model.dtype)
    # Ray 2.60 reads an int concurrency as "autoscale from 1 to n" for engine stages; prefgen's
    # `concurrency: n` means n engines, so a fixed pool is the pair (n, n).
    concurrency = (model.concurrency, max(model.concurrency, model.max_concurrency or 0))
    kwargs: dict[str, Any] = {
        "model_source": model.path,
        "engine_kwargs": engine_kwargs,
        "concurrency": concurrency,
        "batch_size": model.batch_size,
        "should_continue_on_error": True,  # a bad row becomes an error row, not a failed job
    }
    if model.accelerator_type:
        kwargs["accelerator_type"] = model.accelerator_type
    env = object_storage_env(model.path, engine_kwargs, os.environ if environ is None else environ)
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    return kwargs


def object_storage_env(
    path: str, engine_kwargs: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    """Env vars the engine actors need to read s3:// weights from a custom endpoint (no secrets)."""
    if not path.startswith("s3://"):
        return {}
    env: dict[str, str] = {}
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint  # Ray's model downloader (pyarrow)
        env["AWS_ENDPOINT_URL"] = endpoint  # boto3 and the Run:ai streamer
        if engine_kwargs.get("load_format") in STREAMING_LOAD_FORMATS:
            env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"] = "0"  # path-style, as MinIO needs
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if environ.get(name):
            env[name] = environ[name]
    return env


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


def _processor(model: ModelConfig, preprocess=None, postprocess=None):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    light = {"num_cpus": _LIGHT_CPUS}
    return build_processor(
        vLLMEngineProcessorConfig(**vllm_processor_kwargs(model)),
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


# -- generation -------------------------------------------------------------------------------


def preprocess_row(row: dict, model: ModelConfig, seed: int, sample: int) -> dict:
    """Prompt row -> vLLM request. The processor reads `messages` (a list); prefgen's JSON
    `messages` column rides along as `prompt_messages` and is restored by `postprocess_row`."""
    messages = json.loads(row["messages"]) if row["messages"] else []
    return {
        **row,
        "prompt_messages": row["messages"],
        "messages": _generation_messages(messages, model),
        "sampling_params": sampling_params(model, stable_seed(seed, row["id"], model.name, sample)),
    }


def postprocess_row(row: dict, model: ModelConfig, sample: int) -> dict:
    """vLLM output (or error row) -> the prompt row with one more response (rejects untouched)."""
    from prefgen.data.schema import ROW_SCHEMA

    out = {k: row.get(k) for k in ROW_SCHEMA.names}
    out["messages"] = row["prompt_messages"]
    if row["status"] != "ok":
        return out
    responses = json.loads(row["responses"] or "[]")
    responses.append(_response(model, sample, list(row["messages"]), _generation_result(row)))
    out["responses"] = json.dumps(responses, ensure_ascii=False)
    return out


def finish_generation_row(row: dict, model: ModelConfig, sample: int) -> dict:
    """After the processor: error rows (which skipped postprocess) become error responses."""
    from prefgen.data.schema import ROW_SCHEMA

    if row.get("__inference_error__"):
        return postprocess_row(row, model, sample)
    return {k: row.get(k) for k in ROW_SCHEMA.names}


def generation_requests(row: dict, model: ModelConfig, seed: int) -> list[dict]:
    """One prompt row -> one request row per sample (fan-out shape)."""
    if row["status"] != "ok":  # same sampling keys as the real requests, 1 token
        params = {**sampling_params(model, 0), "max_tokens": 1, "logprobs": None}
        return [_request(row, 0, {"kind": "none"}, _NO_REQUEST_MESSAGES, params)]
    messages = _generation_messages(json.loads(row["messages"]) if row["messages"] else [], model)
    return [
        _request(
            row,
            sample,
            {"kind": "sample", "sample": sample},
            messages,
            {
                **sampling_params(model, stable_seed(seed, row["id"], model.name, sample)),
                "logprobs": None,
            },
        )
        for sample in range(model.samples_per_prompt)
    ]


def merge_generation(results: list[dict], model: ModelConfig) -> dict:
    """The request rows of one prompt (answered, in any order) -> the prompt row (fan-in)."""
    row, answered = _unpack(results)
    if row["status"] == "ok":
        responses = json.loads(row["responses"] or "[]")
        messages = json.loads(row["messages"]) if row["messages"] else []
        system = _generation_messages(messages, model)
        for item, result in sorted(answered, key=lambda ir: ir[0]["sample"]):
            responses.append(_response(model, item["sample"], system, result))
        row["responses"] = json.dumps(responses, ensure_ascii=False)
    return row


def apply_vllm_generation(ds, model: ModelConfig, seed: int):
    if model.samples_per_prompt == 1:
        processor = _processor(
            model,
            preprocess=partial(preprocess_row, model=model, seed=seed, sample=0),
            postprocess=partial(postprocess_row, model=model, sample=0),
        )
        return processor(ds).map(
            partial(finish_generation_row, model=model, sample=0), num_cpus=_LIGHT_CPUS
        )
    requests = ds.flat_map(
        partial(generation_requests, model=model, seed=seed), num_cpus=_LIGHT_CPUS
    )
    return _fan_in(_processor(model)(requests), partial(merge_generation, model=model))


# -- judging ----------------------------------------------------------------------------------


def judge_requests(row: dict, judge: LLMJudgeConfig) -> list[dict]:
    """One prompt row -> one request per (judgeable response, rubric aspect, mode).

    `probability`: the judge conversation plus the rubric's prefix as a partial assistant turn
    (Ray's chat-template stage continues it), greedy, 2 tokens, top-20 logprobs. `generate`:
    the conversation, greedy, `judge.max_tokens`, parsed afterwards. `both`: both requests.
    """
    from prefgen.judges.rubrics import render_judge_messages, score_prefix
    from prefgen.judges.shared import is_self_judged, judge_targets, question_text, rubric_for

    _check_pointwise(judge)
    decoded = _decode(row)
    rubric = rubric_for(judge, decoded["domain"])
    modes = ["probability", "generate"] if judge.mode == "both" else [judge.mode]
    names = judge_score_names(judge.name, rubric.aspects)
    requests = []
    for _, j in judge_targets([decoded]):
        response = decoded["responses"][j]
        if is_self_judged(response["model"], judge):
            continue  # marked skipped_self when the answers are folded in
        for aspect, name in zip(rubric.aspects, names):
            conversation = render_judge_messages(
                rubric,
                aspect,
                question_text(decoded["messages"]),
                response["text"],
                decoded["domain"],
                decoded["reference"],
            )
            for mode in modes:
                item = {"kind": mode, "response": j, "score": name}
                if mode == "probability":
                    messages = [
                        *conversation,
                        {"role": "assistant", "content": score_prefix(rubric)},
                    ]
                    params = {"max_tokens": 2, "logprobs": JUDGE_TOP_LOGPROBS}
                else:
                    messages, params = conversation, {"max_tokens": judge.max_tokens}
                requests.append(
                    _request(row, len(requests), item, messages, {**_JUDGE_PARAM_KEYS, **params})
                )
    return requests or [
        _request(row, 0, {"kind": "none"}, _NO_REQUEST_MESSAGES, dict(_JUDGE_PARAM_KEYS))
    ]


def request_result(row: dict) -> dict:
    """A processor output row (answer or error) -> the fan-in columns, the answer as JSON."""
    error = row.get("__inference_error__") or ""
    result: dict[str, Any] = {"error": str(error)} if error else _generation_result(row)
    if not error and row.get("logprobs") is not None:
        result["steps"] = vllm_logprob_steps(row["logprobs"])
    return {
        _KEY: row[_KEY],
        _ROW: row[_ROW],
        _ITEM: row[_ITEM],
        _RESULT: json.dumps(result, ensure_ascii=False),
    }


def merge_judgements(results: list[dict], judge: LLMJudgeConfig) -> dict:
    """The answered requests of one prompt -> the prompt row with scores, as the pointwise
    judge writes them (`scores`, `rationales`, `judge_status`, `skipped_self`). Generate mode is
    one try here: a processor is one pass, so an unparsed reply is not re-asked."""
    from prefgen.judges.parsing import parse_rating, weighted_score
    from prefgen.judges.rubrics import score_labels
    from prefgen.judges.shared import (
        SKIPPED_SELF,
        is_self_judged,
        judge_targets,
        record,
        rubric_for,
    )

    row, answered = _unpack(results)
    decoded = _decode(row)
    rubric = rubric_for(judge, decoded["domain"])
    labels = score_labels(rubric)
    responses = decoded["responses"]
    for _, j in judge_targets([decoded]):
        if is_self_judged(responses[j]["model"], judge):
            for name in judge_score_names(judge.name, rubric.aspects):
                responses[j]["judge_status"][name] = SKIPPED_SELF
    by_target: dict[tuple[int, str], dict[str, dict]] = {}
    for item, result in answered:
        by_target.setdefault((item["response"], item["score"]), {})[item["kind"]] = result
    for (j, name), kinds in by_target.items():
        response = responses[j]
        errors = [r["error"] for r in kinds.values() if r.get("error")]
        weighted = parsed = reply = None
        if "probability" in kinds and not kinds["probability"].get("error"):
            probs = label_probabilities_from_steps(kinds["probability"].get("steps") or [], labels)
            weighted = weighted_score(probs)
        if "generate" in kinds and not kinds["generate"].get("error"):
            reply = kinds["generate"]["text"]
            parsed = parse_rating(reply, rubric.scale)
        score = parsed if parsed is not None else weighted
        status = None  # record(): ok, or no_score
        if errors and score is None:
            status = f"error: {errors[0]}"
        elif judge.mode == "generate" and parsed is None:
            status = "parse_failed after 1 tries"
        record(response, name, score, status, reply)
    row["responses"] = json.dumps(responses, ensure_ascii=False)
    return row


def apply_vllm_judging(ds, judge: LLMJudgeConfig):
    """Score every response with a vLLM judge; `ds` holds prompt rows, so does the result."""
    _check_pointwise(judge)
    requests = ds.flat_map(partial(judge_requests, judge=judge), num_cpus=_LIGHT_CPUS)
    return _fan_in(_processor(judge.model)(requests), partial(merge_judgements, judge=judge))


def _check_pointwise(judge: LLMJudgeConfig) -> None:
    kind = getattr(judge, "kind", "pointwise")
    if kind != "pointwise":
        raise ValueError(
            f"judge {judge.name!r}: kind {kind!r} does not run on vLLM yet (pointwise only); "
            "use engine transformers or openai for it"
        )


def vllm_logprob_steps(logprobs) -> list[tuple[str, dict[str, float]]]:
    """Ray's `logprobs` column (per generated token: {token id: {logprob, rank, decoded_token}})
    -> [(chosen token, {alternative text: logprob})]. The chosen token is the best-ranked one
    (the judge requests are greedy). Tolerates the dict arriving as (key, value) pairs."""
    steps = []
    for position in logprobs or []:
        entries = position.values() if isinstance(position, Mapping) else position
        alternatives: dict[str, float] = {}
        chosen, best_rank = "", math.inf
        for entry in entries:
            info = entry[1] if isinstance(entry, (tuple, list)) else entry.get("value", entry)
            token = info.get("decoded_token")
            if token is None:
                continue
            alternatives[token] = max(alternatives.get(token, -math.inf), float(info["logprob"]))
            rank = info.get("rank")
            rank = math.inf if rank is None else rank
            if rank < best_rank:
                chosen, best_rank = token, rank
        steps.append((chosen, alternatives))
    return steps


# -- fan-out / fan-in helpers -----------------------------------------------------------------

# Every request row carries the same sampling keys, so Arrow sees one struct type per block.
_JUDGE_PARAM_KEYS = {"temperature": 0.0, "max_tokens": 1, "logprobs": None}
# A row with nothing to ask still sends this 1-token request, so that it comes back.
_NO_REQUEST_MESSAGES = [{"role": "user", "content": "."}]


def _request(row: dict, index: int, item: dict, messages: list[dict], params: dict) -> dict:
    return {
        _KEY: f"{row['source']}#{row['index']}",  # unique per input record, unlike `id`
        _ROW: json.dumps(row, ensure_ascii=False, default=_plain) if index == 0 else "",
        _ITEM: json.dumps(item),
        "messages": messages,
        "sampling_params": params,
    }


def _plain(value):
    """numpy scalars (as Ray may hand them over) -> Python values for JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _unpack(results: list[dict]) -> tuple[dict, list[tuple[dict, dict]]]:
    row = next(json.loads(r[_ROW]) for r in results if r[_ROW])
    answered = []
    for r in results:
        item = json.loads(r[_ITEM])
        if item["kind"] != "none":
            answered.append((item, json.loads(r[_RESULT])))
    return row, answered


def _fan_in(answered_ds, merge):
    import pyarrow as pa

    from prefgen.data.schema import ROW_SCHEMA

    def fold(group: pa.Table) -> pa.Table:
        row = merge(group.to_pylist())
        return pa.Table.from_pylist([{k: row.get(k) for k in ROW_SCHEMA.names}], schema=ROW_SCHEMA)

    return (
        answered_ds.map(request_result, num_cpus=_LIGHT_CPUS)
        .groupby(_KEY)
        .map_groups(fold, batch_format="pyarrow", num_cpus=_LIGHT_CPUS)
    )


def _decode(row: dict) -> dict:
    out = dict(row)
    out["messages"] = json.loads(row["messages"]) if row["messages"] else []
    out["responses"] = json.loads(row["responses"]) if row["responses"] else []
    return out


def _generation_messages(messages: list[dict], model: ModelConfig) -> list[dict]:
    from prefgen.generate.generator import with_system_prompt

    return with_system_prompt(messages, model.system_prompt) or [{"role": "user", "content": ""}]


def _generation_result(row: dict) -> dict:
    error = row.get("__inference_error__") or ""
    if error:
        return {"error": str(error)}
    return {
        "text": (row.get("generated_text") or "").strip(),
        "n_tokens": int(row.get("num_generated_tokens") or 0),
        "prompt_tokens": int(row.get("num_input_tokens") or 0),
    }


def _response(model: ModelConfig, sample: int, messages: list[dict], result: dict) -> dict:
    error = result.get("error")
    n_tokens = 0 if error else result["n_tokens"]
    return {
        "model": model.name,
        "sample": sample,
        "text": "" if error else result["text"],
        "finish_reason": f"error: {error}"
        if error
        else ("length" if n_tokens >= model.max_tokens else "stop"),
        "n_tokens": n_tokens,
        "system_prompt": messages[0]["content"]
        if messages and messages[0]["role"] == "system"
        else None,
        "gen_seconds": None,
        "scores": {},
        "rationales": {},
        "judge_status": {},
        "overall": None,
    }
