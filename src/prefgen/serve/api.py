"""The reward endpoint's wire format: request and response bodies (pydantic, so FastAPI
validates them and documents them in /openapi.json), the pure decisions behind the routes,
`Limits` (what one request may cost, checked before any tokenizing), and `RequestGuard`, the ASGI
layer that bounds request bodies and hides internal errors.

No Ray and no model here: `prefgen.serve.app` wires these into the Ray Serve deployment, and tests
call the helpers directly.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field, StringConstraints

from prefgen.pairing.reward_filter import filter_decision

logger = logging.getLogger(__name__)

# -- request and response bodies -------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1)]


class Message(BaseModel):
    role: Text
    content: Text


Prompt = Text | Annotated[list[Message], Field(min_length=1)]


class ScoreItem(BaseModel):
    prompt: Prompt
    response: Text


class ScoreRequest(BaseModel):
    items: list[ScoreItem] = Field(min_length=1)


class ScoreResponse(BaseModel):
    rewards: list[float]
    aspects: list[list[float]] | None = Field(
        default=None, description="Per-aspect predictions (models with aspect heads only)."
    )
    aspect_names: list[str] | None = None
    model: str


class CompareRequest(BaseModel):
    prompt: Prompt
    a: Text
    b: Text


class CompareResponse(BaseModel):
    reward_a: float
    reward_b: float
    margin: float = Field(description="reward_a - reward_b")
    p_a_beats_b: float = Field(description="Bradley-Terry: sigmoid(margin)")
    model: str


class RankRequest(BaseModel):
    prompt: Prompt
    responses: list[Text] = Field(min_length=1)


class RankResponse(BaseModel):
    scores: list[float]
    order: list[int] = Field(description="Indices into responses, best first.")
    model: str


class FilterPair(BaseModel):
    prompt: Prompt
    chosen: Text
    rejected: Text


class FilterRequest(BaseModel):
    pairs: list[FilterPair] = Field(min_length=1)
    min_margin: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Keep iff margin > min_margin."
    )


class FilterResult(BaseModel):
    keep: bool
    margin: float = Field(description="reward(chosen) - reward(rejected)")
    reason: Literal["inverted", "below_min_margin"] | None


class FilterResponse(BaseModel):
    results: list[FilterResult]
    kept: int
    model: str


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote RM body. `prompts` and `labels` are accepted and not used: a query is
    scored as one whole text (empty prompt), since a chat-templated query splits unreliably."""

    query: list[Text] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    model: str


class ErrorResponse(BaseModel):
    """Every error this app sends itself: a message (or FastAPI's list of field errors)."""

    detail: str | list[dict[str, Any]]
    request_id: str | None = Field(
        default=None, description="500 only: quote it to find the error in the server log."
    )


def error_responses(auth: bool) -> dict[int | str, dict[str, Any]]:
    """The error statuses of the scoring routes, for /openapi.json (422 FastAPI adds itself)."""
    described = {
        400: "The body is not parseable (e.g. nested too deep, not UTF-8).",
        413: "Over a request limit: max_body_mb, max_items, max_texts or max_total_chars "
        "(the message names it).",
        415: "Content-Type is not application/json.",
        500: "Unexpected server error; the body holds only a request id.",
        503: "Overloaded (queue full): retry after the Retry-After header's seconds.",
    }
    if auth:
        described[401] = "Missing or invalid bearer token."
    return {
        status: {"model": ErrorResponse, "description": text}
        for status, text in sorted(described.items())
    }


# -- the HTTP guard -------------------------------------------------------------------------


class RequestGuard:
    """ASGI middleware around the whole FastAPI app.

    - Caps the request body at `max_body_bytes` (413): a declared Content-Length is refused
      before reading, and a chunked body (no Content-Length) is counted as it arrives, so no
      request makes the replica hold more than the cap. The body is buffered here and replayed
      to the app, which reads it whole anyway.
    - Turns any exception the app lets through into a generic 500 whose body carries only a
      request id (Serve's `x-request-id`, else a fresh one); the traceback goes to the server
      log under that id, never to the client. Headers are never logged (they hold the token).
    """

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        length = headers.get(b"content-length")
        if length is not None and not length.strip().isdigit():
            await _send_json(send, 400, {"detail": "Content-Length is not a number"})
            return
        if length is not None and int(length) > self.max_body_bytes:
            await _send_json(send, 413, {"detail": self._too_large()})
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _send_json(send, 413, {"detail": self._too_large()})
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for a disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked_send)
        except Exception:
            logger.exception(
                "unhandled error: request_id=%s %s %s",
                request_id,
                scope.get("method"),
                scope.get("path"),
            )
            if not started:
                detail = {"detail": "internal server error", "request_id": request_id}
                await _send_json(send, 500, detail)

    def _too_large(self) -> str:
        return f"body over {self.max_body_bytes / 2**20:g} MB (max_body_mb)"


async def _send_json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def require_json(request: Request) -> None:
    """Route dependency: a scoring request must say its body is JSON (415 otherwise), so a
    form post or text/plain gets a message that says what to fix instead of a shape error."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # the media types FastAPI parses as JSON; anything else would reach validation as bytes
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise HTTPException(415, f"Content-Type must be application/json, got {media or 'none'!r}")


# -- pure helpers ----------------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # no overflow for large |x|


def rank_order(scores: list[float]) -> list[int]:
    """Indices best first; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def filter_result(margin: float, min_margin: float) -> dict:
    """The same decision as the pipeline's reward filter (prefgen.pairing.reward_filter)."""
    why = filter_decision(margin, min_margin)
    return {
        "keep": why is None,
        "margin": margin,
        "reason": None if why is None else why.removeprefix("rm_"),
    }


MAX_ERRORS = 20  # field errors listed in one 422; the rest are counted, not listed


def capped_errors(errors: list[dict]) -> list[dict]:
    """At most MAX_ERRORS errors, then one entry saying how many were left out, so a body of
    thousands of wrong values gets a short answer that still says what is wrong."""
    if len(errors) <= MAX_ERRORS:
        return errors
    more = {
        "loc": ["body"],
        "msg": f"and {len(errors) - MAX_ERRORS} more errors (the first {MAX_ERRORS} are listed)",
        "type": "too_many_errors",
    }
    return [*errors[:MAX_ERRORS], more]


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a replica (ServeConfig's fields of the same names).

    A "text" is what the tokenizer is given: each message of a prompt (role and content), a
    prompt string, each response, each /get_reward query. A prompt scored with several responses
    (/v1/rank, /v1/compare) is tokenized once per response, so it counts once per response.
    Tokenizer CPU grows with the characters it is handed, and truncation to the model's
    max_length happens only after a whole text is tokenized, so every bound here is checked
    before any tokenizing.
    """

    max_items: int  # (prompt, response) pairs scored: forward-pass rows (413)
    max_texts: int  # texts tokenized (413)
    max_chars: int  # characters in any one text, role included (422)
    max_total_chars: int  # characters tokenized in all (413)

    @property
    def max_json_values(self) -> int:
        # A request within max_texts holds at most about 3 JSON values per text (a message is an
        # object, a role and a content); 4 per text leaves room for the containers around them.
        return 4 * self.max_texts + 16


def check_json_values(body: Any, limits: Limits) -> None:
    """413 when the parsed body holds more JSON values than any request within the limits can.

    Runs before validation, whose cost (and error list) grows with the values: 8 MB of
    `{"items": [1, 1, ...]}` took a minute of CPU to answer with a 390 MB list of errors.
    Iterative (bodies nest ~1000 deep) and stops at the limit, so it costs at most
    max_json_values steps.
    """
    budget = limits.max_json_values
    stack, count = [body], 1
    while stack:
        value = stack.pop()
        if not isinstance(value, dict | list):
            continue
        count += len(value)  # counted before walking: a list of millions is refused at once
        if count > budget:
            raise HTTPException(
                413,
                f"request body holds more than {budget} JSON values; the limit is {budget} "
                f"per request (4 per text of max_texts={limits.max_texts}, plus 16)",
            )
        stack.extend(value.values() if isinstance(value, dict) else value)


# (location of the prompt, prompt, location of the response, response): one pair to score
ScoredPair = tuple[tuple, Any, tuple, str]


def check_limits(pairs: Iterable[ScoredPair], limits: Limits) -> None:
    """The pairs a request will score against `limits`, before any work on them.

    413 for more than max_items pairs, more than max_texts texts or max_total_chars characters
    to tokenize; 422 (FastAPI's error shape, located in the body) for a text over max_chars.
    A prompt shared by several pairs has one location, so it is measured once and counted once
    per pair.
    """
    pairs = list(pairs)
    if len(pairs) > limits.max_items:
        raise HTTPException(
            413,
            f"request has {len(pairs)} texts to score; the limit is {limits.max_items} per "
            "request (max_items)",
        )
    measured: dict[tuple, tuple[int, int]] = {}
    too_long: list[tuple[tuple, int]] = []
    texts = chars = 0
    for prompt_loc, prompt, response_loc, response in pairs:
        if prompt_loc not in measured:
            measured[prompt_loc] = _measure(prompt_loc, prompt, limits.max_chars, too_long)
        prompt_texts, prompt_chars = measured[prompt_loc]
        texts += prompt_texts + 1
        chars += prompt_chars + len(response)
        if len(response) > limits.max_chars:
            too_long.append((response_loc, len(response)))
    if texts > limits.max_texts:
        raise HTTPException(
            413,
            f"request has {texts} texts to tokenize (each message and response; a prompt once "
            f"per response scored with it); the limit is {limits.max_texts} per request "
            "(max_texts)",
        )
    if too_long:
        errors = [
            {
                "loc": ["body", *loc],
                "msg": f"text has {n} characters; the limit is {limits.max_chars} (max_chars)",
                "type": "string_too_long",
            }
            for loc, n in too_long
        ]
        raise HTTPException(422, capped_errors(errors))
    if chars > limits.max_total_chars:
        raise HTTPException(
            413,
            f"request has {chars} characters to tokenize (a prompt once per response scored "
            f"with it); the limit is {limits.max_total_chars} per request (max_total_chars)",
        )


def _measure(loc: tuple, prompt, max_chars: int, too_long: list) -> tuple[int, int]:
    """(texts, characters) of one prompt; its over-long texts are appended to `too_long`."""
    if isinstance(prompt, str):
        if len(prompt) > max_chars:
            too_long.append((loc, len(prompt)))
        return (1 if prompt else 0), len(prompt)  # "" is /get_reward's: nothing to tokenize
    chars = 0
    for j, message in enumerate(prompt):
        for field in ("role", "content"):
            n = len(getattr(message, field))
            chars += n
            if n > max_chars:
                too_long.append(((*loc, j, field), n))
    return len(prompt), chars


def prompt_value(prompt) -> str | list[dict]:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]
