"""OpenAI-compatible chat-completions engine: hosted APIs, vLLM or SGLang servers, for generators
and judges alike (`engine: openai`, `base_url`, `path` = the model name the server knows).

Why not `ray.data.llm`'s HttpRequestProcessorConfig (Ray 2.60): its HTTP stage retries 429/5xx
with fixed waits (no jitter, Retry-After ignored), reads a 401/400 body as an answer, raises
with the row's payload once retries run out, keeps the API key in a plain config header, and has
no request budget, token usage or label probabilities; all of prefgen's row logic would still
live in pre/postprocess. This engine plugs into the existing GenerateStage and JudgeStage.

Behaviour:
* The API key is read inside the actor from the env var named by `api_key_env` (export it on
  every node, e.g. from a Kubernetes secret, or pass it with `ray job submit --runtime-env-json`).
  It never appears in reprs, stats, manifests, logs or exception messages (the server's own
  error text is dropped for auth failures and scrubbed of the key elsewhere).
* Auth failures are fatal: a missing env var raises `OpenAIAuthError` at construction; a 401/403
  raises it at the first call (and at once on every later call) naming the env var, not the
  key. Everything else is per-request data: after retries a request becomes
  `Completion("", "error: <reason>", 0)`; a judge conversation gets all-zero label
  probabilities (weighted score None).
* Retries: 408/409/429/5xx, timeouts and connection errors, up to `max_retries`, with
  exponential backoff and jitter; Retry-After (seconds or an HTTP date; `retry-after-ms`) is
  honoured up to `MAX_RETRY_AFTER_S`. 400/401/403/404/422 are not retried.
* Concurrency: `max_concurrent_requests` requests in flight per actor (a thread pool; one
  `requests.Session` per thread).
* Budget and usage: `max_requests` counts completions asked for (retries do not count), shared by
  every actor of the model through one named Ray actor per model and run (`UsageLedger`; outside
  Ray, a local one). The driver should open it first (`open_usage_ledger`) so it lives for the
  whole run and can be read at the end (`read_usage`); engines otherwise create it lazily, and
  then it dies with the actor that created it (a new one starts counting from zero).
  Over-budget requests return `Completion("", "error: request budget exhausted", 0)`.

Judging (`label_probabilities`): chat APIs cannot continue an assistant prefix, so by default the
judge is told to reply with its final line only and the engine asks for a few greedy tokens with
`logprobs: true, top_logprobs: 20`, finds the score position after the rubric's prefix and maps
the top alternatives onto the labels (`prefgen.engines.top_logprobs`, which documents what a
multi-token label such as "10" loses). Servers that can continue a partial assistant message
(vLLM, SGLang: `continue_final_message`) do it exactly with `engine_kwargs: {assistant_prefill:
true}` and 2 tokens. Reasoning models that refuse logprobs give no probability scores.

`engine_kwargs` for this engine: `assistant_prefill` (bool), `extra_body` (dict merged into every
request, e.g. `{"max_completion_tokens": 256}` for APIs that want it), `top_logprobs` (int).
`top_k` is sent only when set, since hosted APIs reject it.
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from prefgen.engines.base import Completion, GenerationRequest
from prefgen.engines.top_logprobs import label_probabilities_from_steps, score_position

RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx, as OpenAI's own client does
AUTH_STATUSES = frozenset({401, 403})
MAX_RETRY_AFTER_S = 60.0
BUDGET_EXHAUSTED = "error: request budget exhausted"
_MAX_REASON_CHARS = 200


class OpenAIAuthError(PermissionError):
    """The API key is missing or rejected: fatal for the run, since no retry can fix it."""


class _Secret:
    """Holds the key so that no repr, vars() dump or log line can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


@dataclass
class _Answer:
    body: dict | None
    error: str | None


# -- usage ledger: budget and token counts for one model across all its actors -----------------


class UsageLedger:
    """Request budget and usage totals for one model in one run (a Ray actor, or local)."""

    def __init__(self, max_requests: int | None):
        self.max_requests = max_requests
        self.granted = 0
        self.usage: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, n: int) -> int:
        """Grant up to n requests from the budget; returns how many were granted."""
        with self._lock:
            if self.max_requests is None:
                granted = n
            else:
                granted = max(0, min(n, self.max_requests - self.granted))
            self.granted += granted
            return granted

    def report(self, delta: dict[str, int]) -> None:
        with self._lock:
            for key, value in delta.items():
                self.usage[key] = self.usage.get(key, 0) + int(value)

    def snapshot(self) -> dict:
        with self._lock:
            return {"max_requests": self.max_requests, "granted": self.granted, **self.usage}


def ledger_name(model_name: str) -> str:
    import ray

    return f"prefgen-openai-usage:{model_name}:{ray.get_runtime_context().get_job_id()}"


def open_usage_ledger(model_cfg):
    """The model's ledger actor, created if needed. Call it on the driver before the stages run
    (and keep the handle) so the ledger lives for the whole run; engines find it by name."""
    import ray

    return (
        ray.remote(UsageLedger)
        .options(name=ledger_name(model_cfg.name), get_if_exists=True, num_cpus=0, max_restarts=0)
        .remote(model_cfg.max_requests)
    )


def read_usage(model_cfg) -> dict | None:
    """Run-wide usage of one openai model (None when no ledger exists), for the manifest."""
    import ray

    try:
        handle = ray.get_actor(ledger_name(model_cfg.name))
    except ValueError:
        return None
    return ray.get(handle.snapshot.remote())


class _RayLedger:
    """Client side of the ledger actor; re-opens it once if its owner died."""

    def __init__(self, model_cfg):
        self.model_cfg = model_cfg
        self.handle = open_usage_ledger(model_cfg)

    def _call(self, method: str, *args):
        import ray

        try:
            return ray.get(getattr(self.handle, method).remote(*args))
        except ray.exceptions.RayActorError:
            self.handle = open_usage_ledger(self.model_cfg)
            return ray.get(getattr(self.handle, method).remote(*args))

    def acquire(self, n: int) -> int:
        return self._call("acquire", n)

    def report(self, delta: dict[str, int]) -> None:
        self._call("report", delta)


# -- the engine --------------------------------------------------------------------------------


class OpenAIEngine:
    """Engine protocol over POST {base_url}/chat/completions."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        max_concurrent_requests: int = 8,
        max_requests: int | None = None,
        request_timeout_s: float = 60.0,
        max_retries: int = 4,
        engine_kwargs: dict | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        shared_ledger: bool | None = None,
        model_cfg=None,
    ):
        self.name = name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self._key: _Secret | None = None
        if api_key_env:
            value = os.environ.get(api_key_env, "")
            if not value.strip():
                raise OpenAIAuthError(
                    f"model {name!r}: environment variable {api_key_env} (api_key_env) is not set "
                    "on this worker; export it on every node or pass it via the job's runtime_env"
                )
            self._key = _Secret(value.strip())
        self.max_concurrent_requests = max_concurrent_requests
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        kwargs = dict(engine_kwargs or {})
        self.assistant_prefill = bool(kwargs.pop("assistant_prefill", False))
        self.extra_body = dict(kwargs.pop("extra_body", {}) or {})
        self.top_logprobs = int(kwargs.pop("top_logprobs", 20))
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        if shared_ledger is None:
            import ray

            shared_ledger = ray.is_initialized()
        if shared_ledger and model_cfg is not None:
            self._ledger = _RayLedger(model_cfg)
        else:
            self._ledger = UsageLedger(max_requests)
        self._pool = ThreadPoolExecutor(max_concurrent_requests, thread_name_prefix="openai")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(
            (
                "requests",  # HTTP attempts sent
                "retries",
                "rate_limited",  # 429 answers
                "errors",  # requests that ended as error completions
                "budget_refused",
                "prompt_tokens",
                "completion_tokens",
            ),
            0,
        )
        self._auth_failure: str | None = None

    @classmethod
    def from_config(cls, model_cfg) -> OpenAIEngine:
        return cls(
            name=model_cfg.name,
            base_url=model_cfg.base_url,
            model=model_cfg.path,
            api_key_env=model_cfg.api_key_env,
            max_concurrent_requests=model_cfg.max_concurrent_requests,
            max_requests=model_cfg.max_requests,
            request_timeout_s=model_cfg.request_timeout_s,
            max_retries=model_cfg.max_retries,
            engine_kwargs=model_cfg.engine_kwargs,
            model_cfg=model_cfg,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIEngine(name={self.name!r}, url={self.url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    __str__ = __repr__

    def stats(self) -> dict[str, int]:
        """Counters since this engine started (this actor only; the ledger has the run total)."""
        with self._lock:
            return dict(self._stats)

    # -- Engine protocol ----------------------------------------------------------------------

    def generate(self, requests_: list[GenerationRequest]) -> list[Completion]:
        payloads = [self._generation_payload(r) for r in requests_]
        answers = self._run(payloads)
        return [_completion(a) for a in answers]

    def label_probabilities(
        self, conversations: list[list[dict]], assistant_prefix: str, labels: list[str]
    ) -> list[dict[str, float]]:
        payloads = [self._judge_payload(c, assistant_prefix, labels) for c in conversations]
        results = []
        for answer in self._run(payloads):
            steps = _steps(answer.body) if answer.body else []
            if steps and not self.assistant_prefill:
                start = score_position([t for t, _ in steps], assistant_prefix, labels)
                steps = steps[start:] if start is not None else []
            results.append(label_probabilities_from_steps(steps, labels))
        return results

    # -- payloads -----------------------------------------------------------------------------

    def _generation_payload(self, r: GenerationRequest) -> dict:
        payload = {
            "model": self.model,
            "messages": r.messages,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "seed": r.seed % (2**31),  # some servers reject seeds beyond int32
            **self.extra_body,
        }
        if r.top_k:
            payload["top_k"] = r.top_k
        return payload

    def _judge_payload(self, conversation: list[dict], prefix: str, labels: list[str]) -> dict:
        payload = {
            "model": self.model,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            **self.extra_body,
        }
        if self.assistant_prefill:
            payload["messages"] = [*conversation, {"role": "assistant", "content": prefix}]
            payload.update(continue_final_message=True, add_generation_prompt=False, max_tokens=2)
        else:
            payload["messages"] = with_final_line_instruction(conversation, prefix, labels)
            # the prefix ("Score: [" is ~4 tokens), the score, and one token to split "10"
            payload["max_tokens"] = len(prefix) // 2 + 4
        return payload

    # -- transport ----------------------------------------------------------------------------

    def _run(self, payloads: list[dict]) -> list[_Answer]:
        if self._auth_failure:
            raise OpenAIAuthError(self._auth_failure)
        if not payloads:
            return []
        before = self.stats()
        granted = self._ledger.acquire(len(payloads))
        answers = list(self._pool.map(self._post, payloads[:granted]))
        answers += [_Answer(None, BUDGET_EXHAUSTED)] * (len(payloads) - granted)
        with self._lock:
            self._stats["budget_refused"] += len(payloads) - granted
            for a in answers:
                usage = (a.body or {}).get("usage") or {}
                self._stats["errors"] += 1 if a.error else 0
                self._stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                self._stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            delta = {key: value - before[key] for key, value in self._stats.items()}
        self._ledger.report(delta)
        if self._auth_failure:
            raise OpenAIAuthError(self._auth_failure)
        return answers

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Content-Type"] = "application/json"
            if self._key is not None:
                session.headers["Authorization"] = f"Bearer {self._key.reveal()}"
            self._local.session = session
        return session

    def _post(self, payload: dict) -> _Answer:
        reason = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if self._auth_failure:
                return _Answer(None, "error: authentication failed")
            if attempt:
                self._count("retries")
            self._count("requests")
            wait = self._backoff(attempt)
            try:
                resp = self._session().post(self.url, json=payload, timeout=self.request_timeout_s)
            except requests.Timeout:
                reason = f"timeout after {self.request_timeout_s:g}s"
            except requests.ConnectionError:
                reason = "connection error"
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        return _Answer(resp.json(), None)
                    except ValueError:
                        reason = "invalid JSON in a 200 answer"
                elif status in AUTH_STATUSES:
                    self._auth_failure = (
                        f"model {self.name!r}: {self.url} answered HTTP {status}: the API key in "
                        f"${self.api_key_env} was rejected"
                        if self.api_key_env
                        else f"model {self.name!r}: {self.url} answered HTTP {status} and no "
                        "api_key_env is configured"
                    )
                    return _Answer(None, "error: authentication failed")
                elif status in RETRY_STATUSES or status >= 500:
                    reason = f"http {status}"
                    if status == 429:
                        self._count("rate_limited")
                    retry_after = parse_retry_after(resp.headers)
                    if retry_after is not None:
                        wait = retry_after * (1 + 0.1 * random.random())
                else:
                    return _Answer(None, f"error: http {status}: {self._server_message(resp)}")
            if attempt < self.max_retries:
                time.sleep(wait)
        return _Answer(None, f"error: {reason} (after {self.max_retries + 1} attempts)")

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter: half fixed, half random, so retries of a burst spread out."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _server_message(self, resp: requests.Response) -> str:
        try:
            body = resp.json()
            message = body.get("error", body)
            message = message.get("message", message) if isinstance(message, dict) else message
            text = str(message)
        except ValueError:
            text = resp.text
        if self._key is not None:
            text = text.replace(self._key.reveal(), "<redacted>")
        return " ".join(text.split())[:_MAX_REASON_CHARS]

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n


# -- pure helpers ------------------------------------------------------------------------------


def with_final_line_instruction(
    conversation: list[dict], prefix: str, labels: list[str]
) -> list[dict]:
    """The judge conversation, told to answer with its final line only (no prefill available)."""
    instruction = (
        f"\n\nReply with only the final line, {prefix}n], where n is one of "
        f"{', '.join(labels)}. Write nothing else."
    )
    messages = [dict(m) for m in conversation]
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"] = f"{messages[-1]['content']}{instruction}"
    else:
        messages.append({"role": "user", "content": instruction.strip()})
    return messages


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(millis) / 1000))
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _completion(answer: _Answer) -> Completion:
    if answer.error or not answer.body:
        return Completion("", answer.error or "error: empty answer", 0)
    try:
        choice = answer.body["choices"][0]
    except (KeyError, IndexError, TypeError):
        return Completion("", "error: answer without choices", 0)
    usage = answer.body.get("usage") or {}
    text = ((choice.get("message") or {}).get("content") or "").strip()
    return Completion(
        text,
        choice.get("finish_reason") or "stop",
        int(usage.get("completion_tokens") or 0),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
    )


def _steps(body: dict) -> list[tuple[str, dict[str, float]]]:
    """OpenAI `choices[0].logprobs.content` -> [(chosen token, {alternative: logprob})]."""
    try:
        content = body["choices"][0]["logprobs"]["content"] or []
    except (KeyError, IndexError, TypeError):
        return []
    steps = []
    for entry in content:
        alternatives = {
            alt["token"]: alt["logprob"]
            for alt in entry.get("top_logprobs") or []
            if "token" in alt
        }
        alternatives.setdefault(entry.get("token", ""), entry.get("logprob", -math.inf))
        steps.append((entry.get("token", ""), alternatives))
    return steps
