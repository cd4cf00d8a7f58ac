"""Proxies: how the tester (and the solution process, for the tests' callbacks) holds the other
side's objects (standard library only).

Every operation on a proxy is a request to the owning process. A proxy offers exactly the special
methods the real object's type defines (so callable(), len(), iter() and introspection such as
mock's see the truth), and it compares, orders and combines only with other proxies of the same
connection: `proxy == 5` is False and `proxy - 5` raises TypeError, because the solution must not
be the one deciding what its result equals (the "always equal" object). A proxy's __exit__ never
suppresses an exception, so a context manager cannot swallow a failing assert.
"""

from __future__ import annotations

import collections

if __package__:
    from .values import BINOPS, CMP, UNARY
else:  # inside the sandbox the siblings are plain modules
    from values import BINOPS, CMP, UNARY

MAX_BATCH = 64  # most items one request fetches from a remote iterator

_PLAIN_DUNDERS = frozenset(("__name__", "__qualname__", "__doc__", "__module__", "__dict__",
                            "__annotations__", "__wrapped__"))  # fmt: skip
# Special methods a proxy offers when (and only when) the real object's type has them, so that
# callable(), len(), iter(), isinstance(x, Awaitable) and mock's introspection see the truth.
CAPABILITIES = (
    "__call__ __len__ __iter__ __next__ __reversed__ __getitem__ __setitem__ __delitem__ "
    "__contains__ __enter__ __exit__ __await__ __bool__ __hash__ __int__ __float__ __complex__ "
    "__index__ __bytes__ __round__ __trunc__ __floor__ __ceil__ __neg__ __pos__ __abs__ "
    "__invert__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__"
).split() + [f"__{p}{n}__" for n in BINOPS for p in ("", "r", "i") if (p, n) != ("i", "divmod")]


def capabilities(obj) -> list[str]:
    """The CAPABILITIES that type(obj) or a base defines (object's defaults and the metaclass do
    not count); "-__hash__" when instances are unhashable."""
    mro = type(obj).__mro__
    caps = []
    for name in CAPABILITIES:
        owner = next((c for c in mro if name in c.__dict__), object)
        if owner is object:
            continue
        if owner.__dict__[name] is not None:
            caps.append(name)
        elif name == "__hash__":
            caps.append("-__hash__")
    return caps


class Remote:
    """A proxy for an object on the other side. Every operation is a request; comparisons and
    arithmetic only with other proxies (see the module docstring). Subclasses made by
    `proxy_class` add the special methods the real object has."""

    __slots__ = ("_ep", "_hid", "_kind", "_name", "__weakref__")

    def __init__(self, ep, hid: int, kind, name: str):
        for key, value in (("_ep", ep), ("_hid", hid), ("_kind", kind), ("_name", name)):
            object.__setattr__(self, key, value)

    def __del__(self):
        try:
            ep = object.__getattribute__(self, "_ep")
            ep.freed.append(object.__getattribute__(self, "_hid"))
        except Exception:
            pass

    def _do(self, op: str, **fields):
        return self._ep.request(op, h=self._hid, **fields)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__") and name not in _PLAIN_DUNDERS:
            raise AttributeError(name)
        return self._do("getattr", n=name)

    def __setattr__(self, name, value):
        self._do("setattr", n=name, v=self._ep.encode(value))

    def __delattr__(self, name):
        self._do("delattr", n=name)

    def __repr__(self):
        try:
            text = self._do("repr")
        except Exception:
            text = None
        return text if isinstance(text, str) else f"<solution {self._name}>"

    def __str__(self):
        text = self._do("str")
        if not isinstance(text, str):
            raise TypeError("__str__ returned non-string")
        return text

    def __format__(self, spec):
        text = self._do("format", s=spec)
        if not isinstance(text, str):
            raise TypeError("__format__ returned non-string")
        return text

    def __eq__(self, other):  # without __eq__ of its own, the real object compares by identity
        return self is other if _mine(self, other) else NotImplemented

    def __ne__(self, other):
        return self is not other if _mine(self, other) else NotImplemented

    __hash__ = object.__hash__  # one proxy per object, so identity hashing matches the original

    def __dir__(self):
        names = self._do("dir")
        return names if isinstance(names, list) else []

    def __copy__(self):
        return self._do("copy", d=False)

    def __deepcopy__(self, memo):
        return self._do("copy", d=True)

    def __reduce_ex__(self, protocol):
        raise TypeError("solution objects cannot be pickled in the tester")

    def __mro_entries__(self, bases):
        raise TypeError("a solution class cannot be subclassed in the tester")


def _mine(proxy, other) -> bool:
    return isinstance(other, Remote) and object.__getattribute__(other, "_ep") is proxy._ep


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} returned non-string")
    return value


def _next(self):
    ep, hid = self._ep, self._hid
    buffer = ep.buffers.setdefault(hid, collections.deque())
    if not buffer:
        n = ep.batch.get(hid, 1)
        ep.batch[hid] = min(MAX_BATCH, 2 * n)
        items, error = self._do("next", n=n)
        buffer.extend(("v", item) for item in items)
        if error is not None:
            buffer.append(("x", error))
    kind, value = buffer.popleft()
    if kind == "x":
        buffer.append((kind, value))  # an exhausted iterator stays exhausted
        raise ep.decode_exception(value)
    return value


def _exit(self, *exc_info):
    # The solution's __exit__ runs, but never suppresses the test's exception: otherwise a
    # context manager could swallow a failing assert.
    self._do("exit")
    return False


def _await(self):
    return self._do("await")
    yield  # a generator: the work happens in the solution process


def _iter(self):
    it = self._do("iter")
    return it if isinstance(it, Remote) else iter(it)


def _comparison(name):
    def method(self, other):
        if not _mine(self, other):
            return NotImplemented  # `proxy == 5` falls back to identity: False
        return self._do("cmp", c=name, o=self._ep.encode(other))

    return method


def _binary(name, reflected=False, inplace=False):
    def method(self, other):
        if not _mine(self, other):
            return NotImplemented  # `proxy - 5` raises TypeError
        return self._do("binop", b=name, r=reflected, i=inplace, o=self._ep.encode(other))

    return method


def _unary(name):
    return lambda self: self._do("unary", u=name)


_SPECIAL = {
    "__call__": lambda self, *a, **k: self._ep.call(self, a, k),
    "__len__": lambda self: self._do("len"),
    "__iter__": _iter,
    "__next__": _next,
    "__reversed__": _unary("reversed"),
    "__getitem__": lambda self, key: self._do("getitem", k=self._ep.encode(key)),
    "__setitem__": lambda self, key, v: self._do(
        "setitem", k=self._ep.encode(key), v=self._ep.encode(v)
    ),
    "__delitem__": lambda self, key: self._do("delitem", k=self._ep.encode(key)),
    "__contains__": lambda self, item: self._do("contains", k=self._ep.encode(item)) is True,
    "__enter__": lambda self: self._do("enter"),
    "__exit__": _exit,
    "__await__": _await,
    "__bool__": lambda self: self._do("bool") is True,
    "__hash__": lambda self: _int(self._do("hash"), "__hash__"),
    "__round__": lambda self, ndigits=None: self._do(
        "unary", u="round", v=self._ep.encode(ndigits)
    ),
    **{f"__{n}__": _comparison(n) for n in CMP},
    **{f"__{n}__": _unary(n) for n in UNARY},
    **{f"__{n}__": _binary(n) for n in BINOPS},
    **{f"__r{n}__": _binary(n, reflected=True) for n in BINOPS},
    **{f"__i{n}__": _binary(n, inplace=True) for n in BINOPS if n != "divmod"},
}


def _int(value, what: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{what} returned non-int")
    return value


def _instancecheck(self, obj):
    return _mine(self, obj) and self._do("isinstance", o=self._ep.encode(obj)) is True


def _subclasscheck(self, cls):
    return _mine(self, cls) and self._do("issubclass", o=self._ep.encode(cls)) is True


_PROXY_CLASSES: dict = {}


def proxy_class(kind, caps) -> type:
    key = (kind, frozenset(caps) if isinstance(caps, list) else frozenset())
    cls = _PROXY_CLASSES.get(key)
    if cls is None:
        body: dict = {"__slots__": ()}
        for name in key[1]:
            if name == "-__hash__":
                body["__hash__"] = None
            elif name in _SPECIAL:
                body[name] = _SPECIAL[name]
        if kind in ("c", "e"):
            body.update(__instancecheck__=_instancecheck, __subclasscheck__=_subclasscheck)
        cls = type("Remote", (Remote,), body)
        _PROXY_CLASSES[key] = cls
    return cls
