"""JSON values that can be kept: decoded without surprises, checked before anything writes them.

Everything ingest keeps (messages, id, domain, reference, meta) is written later as Arrow,
Parquet and JSON text, on workers, where a bad value would kill the run. So each value is
checked once, on the driver, and the record is rejected with a reason instead:

* `invalid_unicode`: an unpaired UTF-16 surrogate (JSON `"\\ud800"`), which no UTF-8 writer takes;
* `too_deep`: nesting past `MAX_DEPTH` (the parser's own ~1000-level limit included);
* `too_big_int`: an integer outside int64 (what Arrow holds; Python refuses > 4300 digits);
* `not_finite`: NaN or an infinity (`1e400` included), which JSON cannot write;
* `duplicate_key`: an object naming a key twice (which copy a reader keeps is arbitrary);
* `wrong_type`: a value JSON cannot hold (bytes, say), or a non-string key.

Numbers keep their literal (`BigInt`, `JsonFloat`), so a field that is text by contract
(`reference: 1267650600228229401496703205376`) keeps its exact digits. Nothing here knows rows,
so it stays put when the in-flight row format changes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deepest nesting kept (a record is level 1, a chat message level 3): far beyond real data,
# far below Python's recursion limit, so any later code may walk kept values recursively.
MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class BigInt(str):
    """A JSON integer outside int64, kept as its digits (int() would refuse > 4300 of them)."""


class JsonFloat(float):
    """A JSON number with its literal: `reference: 3.14159265358979323846` stays exact text."""

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


class _DuplicateKey(ValueError):
    pass


def _parse_int(text: str) -> int | BigInt:
    digits = len(text) - text.startswith("-")
    if digits <= 18:
        return int(text)
    if digits <= 19:
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    return BigInt(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=JsonFloat, object_pairs_hook=_object)


def decode_json(text: str) -> tuple[Any, str | None]:
    """JSON text -> (value, None), or (None, reject reason); never raises."""
    if text.startswith("\ufeff"):  # json.loads says so too; the decoder alone would not
        return None, "bad_json: a byte order mark (U+FEFF) before the record"
    try:
        value = _DECODER.decode(text)
    except _DuplicateKey as exc:
        return None, f"duplicate_key: {quote(exc.args[0])} appears more than once in one object"
    except json.JSONDecodeError as exc:
        return None, f"bad_json: {exc.msg} (column {exc.colno})"
    except RecursionError:  # the parser's own limit, ~1000 levels: far past MAX_DEPTH
        return None, f"too_deep: nesting > {MAX_DEPTH} levels"
    except ValueError as exc:
        return None, f"bad_json: {exc}"
    return value, None


def check_json_safe(value: Any, where: str = "value", max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` cannot be kept, or None: it must be JSON (str keys, int64, finite floats),
    hold no unpaired surrogate and nest at most `max_depth` containers (`value` itself the
    first). Iterative, so no depth of input can make it raise."""
    root = (None, where)
    if not isinstance(value, (dict, list)):
        return _leaf_reason(value, root)
    stack: list[tuple[Any, Any, int]] = [(value, root, 1)]
    while stack:
        v, at, depth = stack.pop()
        if depth > max_depth:
            return f"too_deep: nesting > {max_depth} levels in {_path(at, keep=2)}"
        if isinstance(v, dict):
            for k in v:
                if type(k) is not str:
                    return f"wrong_type: {_path(at)} has a {type(k).__name__} key"
                if not k.isascii() and _SURROGATE.search(k):
                    return _surrogate_reason(k, f"a key of {_path(at)}")
            children = v.items()
        else:
            children = enumerate(v)
        for k, x in children:  # the common leaves inline: this runs for every value kept
            if type(x) is str:
                if x.isascii() or not _SURROGATE.search(x):
                    continue
            elif isinstance(x, (dict, list)):
                stack.append((x, (at, k), depth + 1))
                continue
            reason = _leaf_reason(x, (at, k))
            if reason:
                return reason
    return None


def _leaf_reason(v: Any, at) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, BigInt):
        digits = len(v) - v.startswith("-")
        return f"too_big_int: {_path(at)} is an integer of {digits} digits, outside int64"
    if isinstance(v, str):
        return string_reason(v, _path(at))
    if isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            return None
        return f"too_big_int: {_path(at)} is an integer outside int64 ({len(str(v))} digits)"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"not_finite: {_path(at)} is {v}"
    return f"wrong_type: {_path(at)} is {type(v).__name__}, which JSON cannot hold"


def string_reason(text: str, where: str) -> str | None:
    if text.isascii() or not _SURROGATE.search(text):
        return None
    return _surrogate_reason(text, where)


def _surrogate_reason(text: str, where: str) -> str:
    bad = _SURROGATE.search(text)
    return f"invalid_unicode: unpaired surrogate U+{ord(bad.group()):04X} at char {bad.start()} in {where}"


def _path(at, keep: int | None = None) -> str:
    """A location built as (parent, key) links -> `meta.tags[2]` (rendered only on error);
    `keep`: only its first parts (where nesting is the problem, the rest is noise)."""
    parts = []
    while at is not None:
        at, key = at
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif at is None:
            parts.append(key)
        elif _NAME.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{quote(key)}]")
    parts.reverse()
    text = "".join(parts[:keep] if keep else parts)
    return text if len(text) <= 200 else text[:200] + "..."


def quote(key: str) -> str:
    """A key from the input, short and escaped: safe inside a reason whatever it holds."""
    return json.dumps(key if len(key) <= 40 else key[:40] + "...", ensure_ascii=True)


def clean(text: str, limit: int) -> str:
    """At most `limit` chars that any UTF-8 writer accepts (surrogates backslash-escaped)."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def number_text(value: int | float | str) -> str:
    """A scalar as text, a JSON number as written (`1.50` stays `1.50`, big ints whole)."""
    return value.text if isinstance(value, JsonFloat) else str(value)
