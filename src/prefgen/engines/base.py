"""What every engine speaks: chat requests in, completions and log-probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict]
    max_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop | length | error: ...
    n_tokens: int
    prompt_tokens: int = 0  # as the server counted them (openai); 0 where unknown


class Engine(Protocol):
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...

    def label_probabilities(
        self, conversations: list[list[dict]], assistant_prefix: str, labels: list[str]
    ) -> list[dict[str, float]]: ...

    # Sum of log p(response tokens | chat-templated conversation); None when it cannot be
    # computed (too long). Used by the CDR density-ratio judge.
    def response_logprobs(
        self, conversations: list[list[dict]], responses: list[str]
    ) -> list[float | None]: ...


TEMPLATE_ERROR = "error: chat_template"


def template_error(exc: BaseException) -> Completion:
    """The completion of a request whose conversation the chat template refuses (a template
    that allows no system turn, say): an input error of that row, never a retry."""
    detail = " ".join(str(exc).split())[:200]
    return Completion("", f"{TEMPLATE_ERROR} ({type(exc).__name__}: {detail})", 0)
