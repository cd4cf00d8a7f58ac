"""Generation stage: one per configured model, each its own Ray Data actor pool.

Input columns: the prompt row (`messages`, `status`, `responses`, ...). Output: the same rows,
with this model's `samples_per_prompt` responses appended to `responses`. Rejected rows pass
through untouched. Each response records the model name, sample index, text, finish reason,
token count, the system prompt used and its share of the batch's wall time (for tokens/s).
"""

from __future__ import annotations

import time

import pyarrow as pa

from prefgen.config import ModelConfig
from prefgen.engines import GenerationRequest, load_engine
from prefgen.rows import decode_batch, encode_batch, is_ok, stable_seed


def build_requests(
    rows: list[dict], model: ModelConfig, seed: int
) -> list[tuple[int, int, GenerationRequest]]:
    """(row index, sample index, request) for every ok row and sample. Pure: tested directly."""
    requests = []
    for i, row in enumerate(rows):
        if not is_ok(row):
            continue
        messages = with_system_prompt(row["messages"], model.system_prompt)
        for sample in range(model.samples_per_prompt):
            requests.append(
                (
                    i,
                    sample,
                    GenerationRequest(
                        messages=messages,
                        max_tokens=model.max_tokens,
                        temperature=model.temperature,
                        top_p=model.top_p,
                        top_k=model.top_k,
                        seed=stable_seed(seed, row["id"], model.name, sample),
                    ),
                )
            )
    return requests


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The model's system prompt replaces none of the user's: it is added only if the prompt has none."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


class GenerateStage:
    """Ray Data callable class: heavy __init__ loads the engine once per actor."""

    def __init__(self, model: ModelConfig, seed: int):
        self.model = model
        self.seed = seed
        self.engine = load_engine(model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = decode_batch(batch)
        requests = build_requests(rows, self.model, self.seed)
        if requests:
            start = time.perf_counter()
            completions = self.engine.generate([r for _, _, r in requests])
            share = (time.perf_counter() - start) / len(requests)
            for (i, sample, request), completion in zip(requests, completions):
                rows[i]["responses"].append(
                    {
                        "model": self.model.name,
                        "sample": sample,
                        "text": completion.text,
                        "finish_reason": completion.finish_reason,
                        "n_tokens": completion.n_tokens,
                        "system_prompt": request.messages[0]["content"]
                        if request.messages[0]["role"] == "system"
                        else None,
                        "gen_seconds": share,
                        "scores": {},
                        "rationales": {},
                        "judge_status": {},
                        "overall": None,
                    }
                )
        return encode_batch(rows)
