"""The reward endpoint's wire format: request and response bodies (pydantic, so FastAPI
validates them and documents them in /openapi.json) and the pure decisions behind the routes.

No Ray and no model here: `prefgen.serve` wires these into the Ray Serve deployment, and tests
call the helpers directly.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, Field, StringConstraints

from prefgen.filtering import filter_decision

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
    min_margin: float = Field(default=0.0, ge=0, description="Keep iff margin > min_margin.")


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


# -- pure helpers ----------------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # no overflow for large |x|


def rank_order(scores: list[float]) -> list[int]:
    """Indices best first; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def filter_result(margin: float, min_margin: float) -> dict:
    """The same decision as the pipeline's reward filter (prefgen.filtering)."""
    why = filter_decision(margin, min_margin)
    return {
        "keep": why is None,
        "margin": margin,
        "reason": None if why is None else why.removeprefix("rm_"),
    }


def check_limits(
    scored: int, texts: list[tuple[tuple, str]], max_items: int, max_chars: int
) -> None:
    """413 when a request scores more than max_items texts; 422 (FastAPI's error shape) when any
    text is longer than max_chars. `texts` holds (location in the body, text) pairs."""
    if scored > max_items:
        raise HTTPException(
            413, f"request has {scored} texts to score; the limit is {max_items} per request"
        )
    errors = [
        {
            "loc": ["body", *loc],
            "msg": f"text has {len(text)} characters; the limit is {max_chars}",
            "type": "string_too_long",
        }
        for loc, text in texts
        if len(text) > max_chars
    ]
    if errors:
        raise HTTPException(422, errors)


def prompt_value(prompt) -> str | list[dict]:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


def prompt_texts(loc: tuple, prompt) -> list[tuple[tuple, str]]:
    """The texts of a prompt for the length check: the string, or each message's content."""
    if isinstance(prompt, str):
        return [(loc, prompt)]
    return [((*loc, j, "content"), m.content) for j, m in enumerate(prompt)]
