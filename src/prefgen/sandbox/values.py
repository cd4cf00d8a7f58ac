"""Plain data on the wire between the tester and the solution process (standard library only).

What is plain crosses by value, as tagged JSON, and the receiver rebuilds it from builtin types
only: None, bool, int (any size), float (nan, inf, -0.0 included), complex, str, bytes,
bytearray, tuple, list, dict, set, frozenset, range, slice, Ellipsis, namedtuple (rebuilt as a
namedtuple of the same name and fields), Counter, OrderedDict, defaultdict (of a builtin type),
deque, Fraction, Decimal, and naive or fixed-offset dates and times. Subclasses arrive as their
builtin base (an int subclass with a rigged __eq__ arrives as a plain int). Everything else, and
anything nested too deep or cyclic, goes through the `handle` callback (an opaque reference).
"""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import fractions
import math
import operator
import threading

MAX_DEPTH = 200
INT_LIMIT = 1 << 63
TAINT_CHARS = 16  # received strings this long are remembered (see harness._guard)
BUILTIN_FACTORIES = {t.__name__: t for t in (int, float, str, bytes, list, dict, set, tuple,
                                             frozenset, bool, complex)}  # fmt: skip
CMP = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
       "gt": operator.gt, "ge": operator.ge}  # fmt: skip
BINOPS = "add sub mul matmul truediv floordiv mod divmod pow lshift rshift and xor or".split()
UNARY = {"neg": operator.neg, "pos": operator.pos, "abs": abs, "invert": operator.invert,
         "int": int, "float": float, "complex": complex, "index": operator.index,
         "trunc": math.trunc, "floor": math.floor, "ceil": math.ceil, "bytes": bytes}  # fmt: skip
_DATES = {"date": datetime.date, "datetime": datetime.datetime, "time": datetime.time}
_SCALARS = (type(None), bool, str, float)
_WIRE_SCALARS = (type(None), bool, str, float, int)  # what json.loads makes of them


def _flat(items: list) -> bool:
    """True if every item is a scalar JSON carries as itself: the list is its own encoding."""
    for x in items:
        t = type(x)
        if t is int:
            if not -INT_LIMIT <= x < INT_LIMIT:
                return False
        elif t not in _SCALARS:
            return False
    return True


def encode(v, handle, depth: int = 0, path: frozenset = frozenset()):
    """`v` as JSON-able data; `handle(v)` for what is not plain."""
    t = type(v)
    if v is None or t is bool or t is str or t is float:
        return v
    if t is int:
        return v if -INT_LIMIT <= v < INT_LIMIT else {"I": format(v, "x")}
    if depth > MAX_DEPTH or id(v) in path:
        return handle(v)
    sub = path | {id(v)}

    def enc(x):
        return encode(x, handle, depth + 1, sub)

    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return encode(int.__index__(v), handle)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, tuple):
        fields = getattr(type(v), "_fields", None)
        items = list(tuple.__iter__(v))
        items = items if _flat(items) else [enc(x) for x in items]
        if isinstance(fields, tuple) and all(isinstance(f, str) for f in fields):
            return {"NT": [type(v).__name__, list(fields), items]}
        return {"T": items}
    if isinstance(v, list):
        items = list.copy(v)
        return {"L": items if _flat(items) else [enc(x) for x in items]}
    if isinstance(v, dict):
        pairs = [[enc(k), enc(x)] for k, x in dict.items(v)]
        if isinstance(v, collections.Counter):
            return {"CT": pairs}
        if isinstance(v, collections.OrderedDict):
            return {"OD": pairs}
        if isinstance(v, collections.defaultdict):
            factory = v.default_factory
            name = factory.__name__ if factory in BUILTIN_FACTORIES.values() else None
            return {"DD": [name, pairs]}
        return {"D": pairs}
    if isinstance(v, frozenset):
        return {"FS": [enc(x) for x in frozenset.__iter__(v)]}
    if isinstance(v, set):
        return {"S": [enc(x) for x in set.__iter__(v)]}
    if isinstance(v, bytearray):
        return {"BA": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, bytes):
        return {"B": base64.b64encode(bytes(memoryview(v))).decode()}
    if isinstance(v, complex):
        return {"CX": [float(complex.__getattribute__(v, n)) for n in ("real", "imag")]}
    if t is range:
        return {"RG": [v.start, v.stop, v.step]}
    if t is slice:
        return {"SL": [enc(v.start), enc(v.stop), enc(v.step)]}
    if v is Ellipsis:
        return {"EL": 0}
    if isinstance(v, collections.deque):
        return {"DQ": [[enc(x) for x in v], v.maxlen]}
    if t is fractions.Fraction:
        return {"FR": [enc(v.numerator), enc(v.denominator)]}
    if t is decimal.Decimal:
        return {"DE": str(v)}
    if t is datetime.timedelta:
        return {"TD": [v.days, v.seconds, v.microseconds]}
    if t in (datetime.datetime, datetime.date, datetime.time):
        if t is datetime.date or v.tzinfo is None or type(v.tzinfo) is datetime.timezone:
            return {"DT": [t.__name__, v.isoformat()]}
    return handle(v)


def decode(v, resolve, tainted: set | None = None, depth: int = 0):
    """Rebuild a value from `encode`'s output with builtin types only; `resolve(tag, v)` for the
    "H" (the sender's object) and "O" (our own object) tags. Strings of TAINT_CHARS or more go
    into `tainted`. Raises ValueError (or TypeError...) on anything malformed."""
    if v is None or isinstance(v, (bool, str, float)):
        if tainted is not None and isinstance(v, str) and len(v) >= TAINT_CHARS:
            tainted.add(v)
        return v
    if isinstance(v, int):
        return v
    if not isinstance(v, dict) or not v or depth > MAX_DEPTH + 10:
        raise ValueError("not a sandbox value")

    def dec(x):
        return decode(x, resolve, tainted, depth + 1)

    tag, body = next(iter(v.items()))
    if tag in ("H", "O"):
        return resolve(tag, v)
    if tag in ("L", "T") and type(body) is list and all(type(x) in _WIRE_SCALARS for x in body):
        if tainted is not None:
            tainted.update(x for x in body if type(x) is str and len(x) >= TAINT_CHARS)
        return body if tag == "L" else tuple(body)  # json.loads made these objects: ours
    if tag == "I":
        return int(body, 16)
    if tag == "T":
        return tuple(dec(x) for x in body)
    if tag == "L":
        return [dec(x) for x in body]
    if tag == "D":
        return {dec(k): dec(x) for k, x in body}
    if tag == "S":
        return {dec(x) for x in body}
    if tag == "FS":
        return frozenset(dec(x) for x in body)
    if tag == "B":
        return base64.b64decode(body)
    if tag == "BA":
        return bytearray(base64.b64decode(body))
    if tag == "CX":
        return complex(float(body[0]), float(body[1]))
    if tag == "RG":
        return range(*(int(x) for x in body))
    if tag == "SL":
        return slice(*(dec(x) for x in body))
    if tag == "EL":
        return Ellipsis
    if tag == "NT":
        name, fields, items = body
        return _namedtuple(str(name), tuple(str(f) for f in fields))(*(dec(x) for x in items))
    if tag == "CT":
        return collections.Counter({dec(k): dec(x) for k, x in body})
    if tag == "OD":
        return collections.OrderedDict((dec(k), dec(x)) for k, x in body)
    if tag == "DD":
        factory = BUILTIN_FACTORIES.get(body[0]) if body[0] is not None else None
        return collections.defaultdict(factory, {dec(k): dec(x) for k, x in body[1]})
    if tag == "DQ":
        maxlen = body[1] if body[1] is None else int(body[1])
        return collections.deque((dec(x) for x in body[0]), maxlen)
    if tag == "FR":
        return fractions.Fraction(int(dec(body[0])), int(dec(body[1])))
    if tag == "DE":
        return decimal.Decimal(str(body))
    if tag == "TD":
        return datetime.timedelta(*(int(x) for x in body))
    if tag == "DT":
        return _DATES[body[0]].fromisoformat(str(body[1]))
    raise ValueError(f"unknown tag {tag!r}")


def write_back(original, new) -> None:
    """Make a mutable argument the caller passed show what the callee did to its copy."""
    if isinstance(original, (list, bytearray)) and isinstance(new, (list, bytearray)):
        original[:] = new
    elif isinstance(original, dict) and isinstance(new, dict):
        original.clear()
        original.update(new)
    elif isinstance(original, set) and isinstance(new, set):
        original.clear()
        original.update(new)
    elif isinstance(original, collections.deque) and isinstance(new, collections.deque):
        original.clear()
        original.extend(new)


_NAMEDTUPLES: dict = {}
_INTERNAL = threading.local()


def compiling_internally() -> bool:
    """True while this module compiles code itself: a namedtuple class, whose names are checked
    identifiers (so the tester's audit hook lets that one compile through)."""
    return getattr(_INTERNAL, "on", False)


def _namedtuple(name: str, fields: tuple):
    key = (name, fields)
    if key not in _NAMEDTUPLES:
        _INTERNAL.on = True
        try:
            _NAMEDTUPLES[key] = collections.namedtuple(name, fields)
        except ValueError:  # not identifiers: a plain tuple then
            _NAMEDTUPLES[key] = lambda *items: tuple(items)
        finally:
            _INTERNAL.on = False
    return _NAMEDTUPLES[key]
