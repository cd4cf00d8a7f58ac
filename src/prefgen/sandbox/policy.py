"""What each side of the sandbox's connection may do to the other side's objects.

The solution process serves everything on its own objects (FULL_POLICY): it is the solution's
code either way. The tester serves the solution only what test code hands it (TESTER_POLICY):
calling a callback, iterating, the container protocol, reading and writing plain attributes of
the tests' own objects, and the tester's stdin. Never a dunder attribute, a function's globals
or a frame, so no handle leads from a callback to the tester's internals.
"""

from __future__ import annotations

import builtins
import operator
import sys

if __package__:
    from .proxy import MAX_BATCH
    from .values import BINOPS, CMP, UNARY
else:  # inside the sandbox the siblings are plain modules
    from proxy import MAX_BATCH
    from values import BINOPS, CMP, UNARY


def _op_call(ep, msg, tracked):
    fn = ep.target(msg)
    args = [ep.decode_arg(v, tracked) for v in msg.get("a", ())]
    kwargs = {str(k): ep.decode_arg(v, tracked) for k, v in msg.get("k", ())}
    return fn(*args, **kwargs)


def _binop(obj, name: str, other, reflected: bool, inplace: bool):
    if name not in BINOPS:
        raise ValueError(f"no operator {name!r}")
    if name == "divmod":
        fn = divmod
    elif inplace:
        fn = getattr(operator, "i" + name)
    else:
        fn = getattr(operator, name + "_" if name in ("and", "or") else name)
    return fn(other, obj) if reflected else fn(obj, other)


def _op_next(ep, msg, tracked):
    it, items = ep.target(msg), []
    n = max(1, min(MAX_BATCH, int(msg.get("n", 1))))
    try:
        for _ in range(n):
            items.append(next(it))
    except StopIteration:
        return [items, {"b": "StopIteration", "a": {"T": []}, "s": ""}]
    except Exception as exc:
        return [items, ep.encode_exception(exc)]
    return [items, None]


def _op_unary(ep, msg, tracked):
    obj, name = ep.target(msg), msg.get("u")
    if name == "round":
        ndigits = ep.arg(msg, "v")
        return round(obj) if ndigits is None else round(obj, ndigits)
    if name == "reversed":
        return reversed(obj)
    return UNARY[name](obj)


def _op_await(ep, msg, tracked):
    import asyncio

    awaitable = ep.target(msg)

    async def wait():
        return await awaitable

    return asyncio.run(wait())


def _op_copy(ep, msg, tracked):
    import copy

    return (copy.deepcopy if msg.get("d") else copy.copy)(ep.target(msg))


FULL_POLICY = {
    "call": _op_call,
    "getattr": lambda ep, m, t: getattr(ep.target(m), str(m.get("n"))),
    "setattr": lambda ep, m, t: setattr(ep.target(m), str(m.get("n")), ep.arg(m, "v")),
    "delattr": lambda ep, m, t: delattr(ep.target(m), str(m.get("n"))),
    "getitem": lambda ep, m, t: ep.target(m)[ep.arg(m, "k")],
    "setitem": lambda ep, m, t: operator.setitem(ep.target(m), ep.arg(m, "k"), ep.arg(m, "v")),
    "delitem": lambda ep, m, t: operator.delitem(ep.target(m), ep.arg(m, "k")),
    "contains": lambda ep, m, t: ep.arg(m, "k") in ep.target(m),
    "len": lambda ep, m, t: len(ep.target(m)),
    "bool": lambda ep, m, t: bool(ep.target(m)),
    "hash": lambda ep, m, t: hash(ep.target(m)),
    "str": lambda ep, m, t: str(ep.target(m)),
    "repr": lambda ep, m, t: repr(ep.target(m)),
    "format": lambda ep, m, t: format(ep.target(m), str(m.get("s", ""))),
    "iter": lambda ep, m, t: iter(ep.target(m)),
    "next": _op_next,
    "cmp": lambda ep, m, t: CMP[m.get("c")](ep.target(m), ep.arg(m, "o")),
    "binop": lambda ep, m, t: _binop(
        ep.target(m), str(m.get("b")), ep.arg(m, "o"), bool(m.get("r")), bool(m.get("i"))
    ),  # fmt: skip
    "unary": _op_unary,
    "isinstance": lambda ep, m, t: isinstance(ep.arg(m, "o"), ep.target(m)),
    "issubclass": lambda ep, m, t: issubclass(ep.arg(m, "o"), ep.target(m)),
    "dir": lambda ep, m, t: sorted(str(n) for n in dir(ep.target(m))),
    "enter": lambda ep, m, t: ep.target(m).__enter__(),
    "exit": lambda ep, m, t: ep.target(m).__exit__(None, None, None),
    "await": _op_await,
    "copy": _op_copy,
}


def _test_instance(ep, msg):
    """getattr/setattr from the solution: only on instances of classes the tests defined, and
    never on dunder names, so no handle leads to a function's globals or a frame."""
    obj, name = ep.target(msg), str(msg.get("n"))
    if getattr(type(obj), "__module__", None) != "tests" or isinstance(obj, type):
        raise PermissionError(f"sandbox: the tests' {type(obj).__name__} objects are opaque")
    if name.startswith("__"):
        raise PermissionError(f"sandbox: attribute {name!r} is not available")
    return obj, name


def _tester_call(ep, msg, tracked):
    if not callable(ep.target(msg)):
        raise TypeError("not callable")
    try:
        return _op_call(ep, msg, tracked)
    except AssertionError as exc:  # a test's own assert fails inside a callback: sticky
        ep.callback_failures.append(f"AssertionError in a test callback: {exc}"[:300])
        raise


def _tester_input(ep, msg, tracked):
    return builtins.input(*([ep.arg(msg, "p")] if "p" in msg else []))


def _tester_read(ep, msg, tracked):
    n = int(msg.get("n", -1))
    return sys.stdin.readline(n) if msg.get("line") else sys.stdin.read(n)


# The tester serves the solution only what test code hands it: calling callbacks, iterating,
# reading and writing plain attributes of the tests' own objects, and the tester's stdin.
TESTER_POLICY = {
    "call": _tester_call,
    "getattr": lambda ep, m, t: getattr(*_test_instance(ep, m)),
    "setattr": lambda ep, m, t: setattr(*_test_instance(ep, m), ep.arg(m, "v")),
    "delattr": lambda ep, m, t: delattr(*_test_instance(ep, m)),
    "input": _tester_input,
    "read": _tester_read,
    **{
        op: FULL_POLICY[op]
        for op in (
            "getitem",
            "setitem",
            "delitem",
            "contains",
            "len",
            "bool",
            "hash",
            "str",
            "repr",
            "format",
            "iter",
            "next",
            "cmp",
            "binop",
            "unary",
            "enter",
            "exit",
        )
    },  # fmt: skip
}
