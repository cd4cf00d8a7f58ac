"""The reward model over HTTP: a Ray Serve deployment with a FastAPI ingress.

Routes (JSON; the OpenAPI schema is at /openapi.json, the docs at /docs):

- `POST /v1/score`    {items: [{prompt, response}]} -> {rewards, aspects?, model}
- `POST /v1/compare`  {prompt, a, b} -> {reward_a, reward_b, margin (a - b), p_a_beats_b}
- `POST /v1/rank`     {prompt, responses} -> {scores, order (best first)}
- `POST /v1/filter`   {pairs: [{prompt, chosen, rejected}], min_margin} -> {results: [...]}
- `POST /get_reward`  OpenRLHF's remote reward model: {query: [full texts]} -> {rewards}
- `GET /healthz`      the process answers; `GET /readyz` a one-item forward pass works.

A prompt is a string or a list of chat messages ({role, content}). Every (prompt, response) of
every request joins one `@serve.batch` queue, so concurrent requests share forward passes
(`max_batch_size` items each).

What a request may cost is bounded before any work on it (`prefgen.serve.api.Limits`; the list
and defaults are in serve/README.md): the body's bytes before it is parsed (`max_body_mb`,
declared or chunked: 413), its JSON values before it is validated (413), then the pairs it
scores (`max_items`), the texts (`max_texts`: every message and response, a prompt once per
response it is scored with) and characters (`max_total_chars`) it would tokenize (413) and the
characters of any one text (`max_chars`, roles included: 422), before the tokenizer sees any of
it. Empty texts and malformed JSON get 422, an unparseable body 400, a non-JSON Content-Type
415, a full queue 503 with `Retry-After` (Serve's `max_queued_requests` + `BackpressureConfig`),
an unexpected error a generic 500 carrying only a request id (the traceback is in the replica
log under that id). With `auth_token_env` set, the /v1 routes and /get_reward need
`Authorization: Bearer <token>` (401 otherwise; compared in constant time, before every limit but
the body's bytes); the health routes and the docs stay open.

Run it: `prefgen serve --model DIR`, `serve run prefgen.serve:build_app model=DIR`, or
`serve run serve/reward.yaml`.

What is not covered: TLS (terminate it in front of Serve, or use Serve's ssl_* http_options);
rate limiting per client (the queue bound is global, so one client can fill it); the body cap
is enforced in the replica, after Serve's proxy has forwarded the bytes; malformed JSON is
answered 422 before the token is checked (it reveals nothing but the parse error); a token
passed through `runtime_env.env_vars` is written in clear by Ray's runtime_env_agent.log (use
the node's environment or a Kubernetes secret instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve

from prefgen.data import ray_cluster
from prefgen.reward.model import (
    META_FILE,
    WEIGHTS_FILE,
    conversation_text,
    load_reward_model,
    local_copy,
    score,
)
from prefgen.serve.api import (
    CompareRequest,
    CompareResponse,
    FilterRequest,
    FilterResponse,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RankRequest,
    RankResponse,
    RequestGuard,
    ScoreRequest,
    ScoreResponse,
    capped_errors,
    check_json_values,
    check_limits,
    error_responses,
    filter_result,
    prompt_value,
    rank_order,
    require_json,
    sigmoid,
)
from prefgen.serve.config import ServeConfig

logger = logging.getLogger(__name__)

API_VERSION = "v1"


def model_version(url: str, storage_options: dict | None = None) -> str:
    """`name@sha256[:12]` of the weights: the same bytes give the same id on every replica."""
    directory = Path(local_copy(url, storage_options))
    digest = hashlib.sha256()
    with open(directory / WEIGHTS_FILE, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return f"{Path(url.rstrip('/')).name}@{digest.hexdigest()[:12]}"


# -- the HTTP layer --------------------------------------------------------------------------


def create_api(scorer: RewardServer, cfg: ServeConfig, token: str | None) -> FastAPI:
    """The FastAPI app of one replica; `scorer` supplies `score_pairs`, `ready`, `model_id`."""
    limits = cfg.limits()
    app = FastAPI(
        title="prefgen reward model",
        version=API_VERSION,
        description=(
            "Bradley-Terry reward model: score, compare, rank and filter responses.\n\n"
            f"Per request: body up to {cfg.max_body_mb:g} MB, {limits.max_items} pairs scored, "
            f"{limits.max_texts} texts and {limits.max_total_chars} characters tokenized (a "
            f"prompt once per response scored with it), {limits.max_chars} characters per text."
        ),
    )
    bearer = HTTPBearer(auto_error=False)

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, token.encode()):
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    async def bounded_json(request: Request) -> None:
        # FastAPI has parsed the body (cached on the request) but not validated it yet
        try:
            body = await request.json() if await request.body() else None
        except (ValueError, RecursionError):
            return  # not parseable as JSON after all: validation answers it
        check_json_values(body, limits)

    # Every scoring route sits behind the token (when one is configured; checked first, so an
    # anonymous caller learns nothing else) and takes JSON only, of a bounded size; health and
    # docs stay open. Dependencies run before the body is validated.
    auth = [Depends(require_token)] if token is not None else []
    router = APIRouter(
        dependencies=[*auth, Depends(require_json), Depends(bounded_json)],
        responses=error_responses(auth=token is not None),
    )

    app.add_middleware(RequestGuard, max_body_bytes=int(cfg.max_body_mb * 1024 * 1024))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        # FastAPI's 422 shape, minus `input` (it echoes the whole offending text back); a JSON
        # syntax error keeps its reason ("Expecting ',' delimiter"), which says what to fix.
        errors = []
        for e in exc.errors():
            msg = str(e.get("msg", ""))
            if e.get("type") == "json_invalid" and (e.get("ctx") or {}).get("error"):
                msg = f"{msg}: {e['ctx']['error']}"
            errors.append({"loc": list(e.get("loc", ())), "msg": msg, "type": e.get("type", "")})
        return JSONResponse({"detail": capped_errors(errors)}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        try:
            await scorer.ready()
        except Exception as exc:  # the model is broken: not ready, and say why briefly
            logger.exception("readiness forward pass failed")
            return JSONResponse(
                {"status": "not_ready", "detail": type(exc).__name__}, status_code=503
            )
        return {"status": "ready", "model": scorer.model_id}

    @router.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True)
    async def score_items(body: ScoreRequest):
        check_limits(
            (
                (("items", i, "prompt"), item.prompt, ("items", i, "response"), item.response)
                for i, item in enumerate(body.items)
            ),
            limits,
        )
        rewards, aspects = await scorer.score_pairs(
            [prompt_value(item.prompt) for item in body.items],
            [item.response for item in body.items],
        )
        return {
            "rewards": rewards,
            "aspects": aspects,
            "aspect_names": scorer.aspect_names or None,
            "model": scorer.model_id,
        }

    @router.post("/v1/compare", response_model=CompareResponse)
    async def compare(body: CompareRequest):
        check_limits(
            [
                (("prompt",), body.prompt, ("a",), body.a),
                (("prompt",), body.prompt, ("b",), body.b),
            ],
            limits,
        )
        prompt = prompt_value(body.prompt)
        (reward_a, reward_b), _aspects = await scorer.score_pairs(
            [prompt, prompt], [body.a, body.b]
        )
        margin = reward_a - reward_b
        return {
            "reward_a": reward_a,
            "reward_b": reward_b,
            "margin": margin,
            "p_a_beats_b": sigmoid(margin),
            "model": scorer.model_id,
        }

    @router.post("/v1/rank", response_model=RankResponse)
    async def rank(body: RankRequest):
        check_limits(
            ((("prompt",), body.prompt, ("responses", i), r) for i, r in enumerate(body.responses)),
            limits,
        )
        prompt = prompt_value(body.prompt)
        scores, _aspects = await scorer.score_pairs([prompt] * len(body.responses), body.responses)
        return {"scores": scores, "order": rank_order(scores), "model": scorer.model_id}

    @router.post("/v1/filter", response_model=FilterResponse)
    async def filter_pairs(body: FilterRequest):
        check_limits(
            (
                (("pairs", i, "prompt"), p.prompt, ("pairs", i, side), getattr(p, side))
                for i, p in enumerate(body.pairs)
                for side in ("chosen", "rejected")
            ),
            limits,
        )
        prompts, responses = [], []
        for p in body.pairs:
            prompt = prompt_value(p.prompt)
            prompts += [prompt, prompt]
            responses += [p.chosen, p.rejected]
        rewards, _aspects = await scorer.score_pairs(prompts, responses)
        results = [
            filter_result(rewards[2 * i] - rewards[2 * i + 1], body.min_margin)
            for i in range(len(body.pairs))
        ]
        return {
            "results": results,
            "kept": sum(r["keep"] for r in results),
            "model": scorer.model_id,
        }

    @router.post("/get_reward", response_model=OpenRLHFResponse)
    async def get_reward(body: OpenRLHFRequest):
        check_limits(((("query",), "", ("query", i), q) for i, q in enumerate(body.query)), limits)
        rewards, _aspects = await scorer.score_pairs([""] * len(body.query), body.query)
        return {"rewards": rewards, "model": scorer.model_id}

    app.include_router(router)
    return app


# -- the deployment --------------------------------------------------------------------------


@serve.deployment
@serve.ingress()  # the app is built per replica (below), once the config and token are known
class RewardServer:
    """One replica: the model, a batching queue in front of it, and the HTTP app."""

    def __init__(self, cfg: ServeConfig):
        import torch

        self.cfg = cfg
        self.token: str | None = None
        if cfg.auth_token_env:
            self.token = os.environ.get(cfg.auth_token_env) or None
            if self.token is None:  # fail closed: never serve open when auth was asked for
                raise RuntimeError(
                    f"auth_token_env={cfg.auth_token_env!r} but that variable is empty or "
                    "unset in the replica's environment"
                )
        torch.set_num_threads(cfg.num_threads or max(1, int(cfg.num_cpus)))
        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_reward_model(cfg.model, cfg.storage_options, device)
        self.model_id = model_version(cfg.model, cfg.storage_options)
        self.aspect_names = list(self.model.meta.aspects)
        # One thread runs forward passes, so the event loop keeps admitting requests (and
        # filling the next batch) while the current batch computes.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rm-forward")
        self._score_one.set_max_batch_size(cfg.max_batch_size)
        self._score_one.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self, self.cfg, self.token)

    async def score_pairs(self, prompts: list, responses: list[str]):
        """Rewards (and aspects or None) for (prompt, response) pairs, via the shared batches."""
        results = await asyncio.gather(
            *(self._score_one((p, r)) for p, r in zip(prompts, responses))
        )
        rewards = [r for r, _ in results]
        aspects = [a for _, a in results] if self.aspect_names else None
        return rewards, aspects

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # reset from the config in init
    async def _score_one(self, items: list[tuple]) -> list[tuple[float, list[float] | None]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._forward, items)

    def _forward(self, items: list[tuple]) -> list[tuple[float, list[float] | None]]:
        # Whole texts (empty prompt, from /get_reward) and (prompt, response) pairs tokenize
        # differently, so each kind gets its own pass: a reward never depends on its batch-mates.
        out: list[Any] = [None] * len(items)
        whole = [i for i, (p, _) in enumerate(items) if not conversation_text(p)]
        paired = [i for i, (p, _) in enumerate(items) if conversation_text(p)]
        for group in (whole, paired):
            if not group:
                continue
            rewards, aspects = score(
                self.model,
                self.tokenizer,
                [items[i][0] for i in group],
                [items[i][1] for i in group],
                batch_size=len(group),
            )
            for k, i in enumerate(group):
                out[i] = (rewards[k], aspects[k] if aspects is not None else None)
        return out

    async def ready(self) -> None:
        """A one-item forward pass (outside the batch queue); raises if the model is unusable."""
        loop = asyncio.get_running_loop()
        [(reward, _)] = await loop.run_in_executor(self._executor, self._forward, [("", "ok")])
        if not math.isfinite(reward):
            raise RuntimeError(f"readiness forward pass gave {reward}")

    async def check_health(self) -> None:
        """Serve's periodic health check: a failure restarts the replica."""
        await self.ready()


def build(cfg: ServeConfig):
    """The Serve application for a config."""
    return RewardServer.options(**cfg.deployment_options()).bind(cfg)


def build_app(args: dict) -> Any:
    """Application builder: `serve run prefgen.serve:build_app model=DIR [key=value ...]` or
    `import_path: prefgen.serve:build_app` + `args:` in a Serve config file."""
    return build(ServeConfig(**args))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_server(cfg: ServeConfig, name: str = "prefgen-rm") -> None:
    """Start Ray (a local one of our own unless RAY_ADDRESS is set) and Serve on
    cfg.host:cfg.port; block until Ctrl-C, then shut Serve down."""
    cluster = ray_cluster.connect()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build(cfg), name=name, route_prefix="/")
    print(f"prefgen reward model at http://{cfg.host}:{cfg.port}  (docs: /docs; Ctrl-C stops)")
    print(f"  ray  {cluster.describe()}", flush=True)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a container stop) shuts down as cleanly as Ctrl-C
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with `&`
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


def serve_command(model: str, host: str, port: int, replicas: int, token_env: str | None) -> int:
    """`prefgen serve`: exit status 2 on a bad option, else serve until Ctrl-C."""
    if token_env and not os.environ.get(token_env):
        # the local Ray started here passes this process's environment on to the replicas
        print(f"prefgen: --token-env {token_env}: that variable is not set", file=sys.stderr)
        return 2
    try:
        cfg = ServeConfig(
            model=model, host=host, port=port, num_replicas=replicas, auth_token_env=token_env
        )
    except ValueError as exc:
        print(f"prefgen: {exc}", file=sys.stderr)
        return 2
    if "://" not in model and not (Path(model) / META_FILE).is_file():
        print(f"prefgen: {model} is not a saved prefgen reward model", file=sys.stderr)
        return 2
    run_server(cfg)
    return 0
