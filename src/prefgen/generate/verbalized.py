"""Verbalized Sampling: one call asks a model for k responses with their probabilities.

Why: aligned models collapse onto a few typical answers (typicality bias in preference data);
asking for a distribution of k responses instead of one sample brings diversity back (1.6-2.1x
on creative writing, factual accuracy and safety kept; docs/research.md "Verbalized Sampling: diversity from one call") at one call per k
responses. `ModelConfig.verbalized_k` turns it on for a model (prefgen.generate.generator).

In: the prompt's messages and k. Out: the messages with the instruction added
(`with_verbalized_instruction`), and, from the reply, exactly k (completion, probability) pieces
(`split_verbalized`).

The instruction follows the paper's VS-Standard prompt: k responses, each in a `<response>` tag
with a `<text>` and a numeric `<probability>`, sampled from the full distribution. It goes in
front of the last user turn, not into the system prompt, so it composes with a model's or a
principle's system prompt and with a prompt's own system message.

`parse_verbalized` is pure and lenient, since small models bend the format:
* `<response>` blocks, with `<text>` and `<probability>` in either order, tags in any case;
* without `<response>` wrappers: each `<text>`, with the first `<probability>` after it and
  before the next `<text>`;
* the paper's JSON variant, `{"responses": [{"text": ..., "probability": ...}]}` (also a bare
  list, also inside a code fence);
* a probability is a number in [0, 1] or a percentage ("30%"); anything else is None, and the
  text still counts;
* a text that is not closed (cut off by max_tokens) or is empty does not count;
* at most k are kept, in order.
Numbered or bulleted lists are not split into responses: a single answer may itself be a list
(steps, options), and cutting it into k fragments would make confident garbage, while an error
response is honest. Small models that ignore the format (the bundled 135M one does) therefore
give error responses; that is the accounting working, not the parser failing.
`split_verbalized` pads to k with error pieces, so every call accounts for exactly k responses.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from prefgen.engines import Completion

UNPARSEABLE = "error: unparseable verbalized sample"
INSTRUCTION = (
    "Generate {k} possible responses to the query below, each within a separate <response> "
    "tag. Each <response> must include a <text> and a numeric <probability>, like "
    "<response><text>...</text><probability>0.2</probability></response>. Randomly sample the "
    "responses from the full distribution. Return only the responses, with no other text."
)

_RESPONSE = re.compile(r"<response\b[^>]*>(.*?)(?:</response\s*>|(?=<response\b)|\Z)", re.S | re.I)
_TEXT = re.compile(r"<text\b[^>]*>(.*?)</text\s*>", re.S | re.I)
_TEXT_OPEN = re.compile(r"<text\b[^>]*>", re.I)
_PROBABILITY = re.compile(r"<probability\b[^>]*>(.*?)</probability\s*>", re.S | re.I)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*(%?)")


class VerbalizedSample(NamedTuple):
    text: str
    probability: float | None


def verbalized_instruction(k: int) -> str:
    return INSTRUCTION.format(k=k)


def with_verbalized_instruction(messages: list[dict], k: int) -> list[dict]:
    """A copy of `messages` whose last user turn starts with the instruction (or one added)."""
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message["role"] == "user":
            message["content"] = f"{verbalized_instruction(k)}\n\n{message['content']}"
            return out
    return [*out, {"role": "user", "content": verbalized_instruction(k)}]


def parse_probability(text: object) -> float | None:
    """ "0.3", " 30% ", 0.3 -> 0.3; out of [0, 1], not a number, or missing -> None."""
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, int | float):
        value, percent = float(text), False
    else:
        match = _NUMBER.search(str(text))
        if match is None:
            return None
        value = float(match.group(0).rstrip("% \t\n"))
        percent = bool(match.group(1))
    if percent:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


def parse_verbalized(text: str, k: int) -> list[VerbalizedSample]:
    """Up to k samples from a model's reply, in order (see the module docstring for the rules)."""
    samples = _parse_tags(text) or _parse_json(text)
    return samples[:k]


def split_verbalized(completion: Completion, k: int) -> list[tuple[Completion, float | None]]:
    """One verbalized call -> exactly k (completion, probability) pieces.

    Parsed pieces finish with "stop" (their text was closed) and share the call's tokens in
    proportion to their characters, so per-model token counts still add up to what the engine
    generated. Missing pieces are error pieces with no text or tokens; a call that itself failed
    gives k copies of its error. If nothing parsed, the first error piece carries the tokens.
    """
    if completion.finish_reason.startswith("error"):
        failed = [(Completion("", completion.finish_reason, 0), None) for _ in range(k)]
        failed[0] = (Completion("", completion.finish_reason, completion.n_tokens), None)
        return failed
    samples = parse_verbalized(completion.text, k)
    tokens = _share(completion.n_tokens, [len(s.text) for s in samples])
    pieces = [(Completion(s.text, "stop", n), s.probability) for s, n in zip(samples, tokens)]
    for missing in range(k - len(pieces)):
        carried = completion.n_tokens if not samples and missing == 0 else 0
        pieces.append((Completion("", UNPARSEABLE, carried), None))
    return pieces


def _parse_tags(text: str) -> list[VerbalizedSample]:
    blocks = [m.group(1) for m in _RESPONSE.finditer(text)]
    if blocks:
        samples = []
        for block in blocks:
            found = _TEXT.search(block)
            if found and found.group(1).strip():
                probability = _PROBABILITY.search(block)
                samples.append(
                    VerbalizedSample(
                        found.group(1).strip(),
                        parse_probability(probability.group(1)) if probability else None,
                    )
                )
        return samples
    # No <response> wrappers: each <text>, with the probability between it and the next <text>.
    samples = []
    for found in _TEXT.finditer(text):
        following = _TEXT_OPEN.search(text, found.end())
        tail = text[found.end() : following.start() if following else len(text)]
        probability = _PROBABILITY.search(tail)
        if found.group(1).strip():
            samples.append(
                VerbalizedSample(
                    found.group(1).strip(),
                    parse_probability(probability.group(1)) if probability else None,
                )
            )
    return samples


def _parse_json(text: str) -> list[VerbalizedSample]:
    for opening, closing in (("{", "}"), ("[", "]")):  # {"responses": [...]}, then a bare list
        start, end = text.find(opening), text.rfind(closing)
        if not 0 <= start < end:
            continue
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            continue
        items = data.get("responses") if isinstance(data, dict) else data
        if isinstance(items, list):
            return [
                VerbalizedSample(item["text"].strip(), parse_probability(item.get("probability")))
                for item in items
                if isinstance(item, dict)
                and isinstance(item.get("text"), str)
                and item["text"].strip()
            ]
    return []


def _share(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to positive `weights`, as integers summing to `total`."""
    if not weights:
        return []
    shares = [total * w // sum(weights) for w in weights]
    shares[-1] += total - sum(shares)
    return shares
