"""Calls between the tester and the solution process (standard library only: runs under -I -S).

The tester never runs the solution's code. It holds proxies, and each use of one becomes a request
over a socket to the solution process, which runs the code and answers. Plain data (numbers,
strings, bytes, containers of them, a few stdlib value types) crosses by value and the receiver
rebuilds it from scratch, so what arrives is a genuine `int` or `list`, never an object with a
rigged `__eq__`. Anything else crosses as an opaque handle. A proxy compares, orders and combines
only with other proxies: `proxy == 5` is False and `proxy - 5` raises, because the solution must
not be the one deciding what its result equals (the "always equal" object). Nothing received is
ever turned into code on the receiving side: a handle is only ever called back.

Wire format: a 4-byte big-endian length, then a JSON object. Requests carry "q" (the operation);
replies carry "r" (a value) or "x" (an exception), and "m" (the new contents of list/dict/set
arguments, so in-place mutation shows). Any message may carry "o"/"e": text the solution printed,
which the tester writes to its own (possibly redirected) stdout/stderr. Each side serves the
other's requests while it waits for its own reply, so callbacks nest.
"""

from __future__ import annotations

import builtins
import collections
import importlib
import json
import select
import struct
import threading
import types
import weakref

if __package__:
    from . import proxy, values
else:  # inside the sandbox the siblings are plain modules
    import proxy
    import values

MAX_FRAME = 16 << 20
MAX_TEXT = 1 << 20
# Stdlib modules the tester may resolve to its own copy when the solution's namespace binds them
# under their own name (`import math`, `from math import isclose`): a test that calls `isclose`
# from the solution's imports then gets the real one, not one the solution patched.
SAFE_MODULES = frozenset(
    "math cmath statistics fractions decimal numbers collections itertools functools operator "
    "heapq bisect string re json datetime calendar copy textwrap unicodedata typing enum array "
    "struct base64 binascii hashlib zlib random time".split()
)


class Lost(BaseException):
    """The other process is gone or broke the protocol. Sticky: once set, every later call raises
    it again, so test code that swallows one exception cannot go on as if the call had worked.
    A BaseException, so `except Exception` in test code does not catch it."""


class RemoteError(Exception):
    """An exception from the other side whose class could not be rebuilt here."""


class TooLarge(Exception):
    pass


class Endpoint:
    """One side of the connection: its exported objects, its proxies for the other side's, and the
    request/serve loop. `policy` says which operations the other side may run on our objects."""

    def __init__(self, sock, policy: dict, watch_fd: int | None = None):
        self.sock = sock
        self.policy = policy
        self.watch_fd = watch_fd  # readable when the other process has exited (set by init)
        self.exports: dict[int, object] = {}
        self.export_ids: dict[int, int] = {}  # id(obj) -> handle
        self.proxies: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.mirrors: dict[int, type] = {}  # handle of a remote exception class -> local class
        self.freed: list[int] = []
        self.buffers: dict[int, collections.deque] = {}  # prefetched items of remote iterators
        self.batch: dict[int, int] = {}
        self.next_hid = 1
        self.lost: str | None = None
        self.thread = threading.get_ident()
        self.out: list[tuple[str, str]] = []  # ("o" | "e", text) waiting to travel with a message
        self.on_text = None  # tester: writes the solution's output to its own streams
        self.tainted = None  # tester: a set collecting strings that came from the solution
        self.callback_failures: list[str] = []
        self.depth = 0  # how many of the other side's requests we are serving right now

    # -- transport --

    def send(self, msg: dict) -> None:
        if self.out:
            for key, text in self.out:
                msg[key] = msg.get(key, "") + text
            self.out = []
        data = json.dumps(msg, separators=(",", ":")).encode()
        if len(data) > MAX_FRAME:
            raise TooLarge(f"message of {len(data)} bytes exceeds the sandbox's {MAX_FRAME}")
        try:
            self.sock.sendall(struct.pack(">I", len(data)) + data)
        except OSError as exc:
            self._lose(f"connection broken ({exc.strerror or exc})")

    def _lose(self, why: str):
        if self.lost is None:
            self.lost = why
        raise Lost(self.lost)

    def _read(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if self.watch_fd is not None:
                ready = select.select([self.sock, self.watch_fd], [], [])[0]
                if self.sock not in ready:  # nothing to read and the other side has exited
                    self._lose("the solution process exited")
            try:
                chunk = self.sock.recv(min(n - got, 1 << 20))
            except OSError as exc:
                self._lose(f"connection broken ({exc.strerror or exc})")
            if not chunk:
                self._lose("the other side closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict:
        (size,) = struct.unpack(">I", self._read(4))
        if size > MAX_FRAME:
            self._lose(f"protocol violation: a {size}-byte message")
        try:
            msg = json.loads(self._read(size))
        except (ValueError, RecursionError):
            self._lose("protocol violation: a message that is not JSON")
        if not isinstance(msg, dict):
            self._lose("protocol violation: a message that is not an object")
        for key in ("o", "e"):
            if isinstance(msg.get(key), str) and self.on_text:
                self.on_text(key, msg[key])
        return msg

    # -- requests --

    def exchange(self, msg: dict) -> dict:
        """Send a message, serve the other side's nested requests, return its raw reply."""
        if self.lost is not None:
            raise Lost(self.lost)
        if threading.get_ident() != self.thread:
            raise RuntimeError("sandbox: proxies can only be used from the main thread")
        if self.freed:
            msg["free"], self.freed = self.freed, []
        self.send(msg)
        while True:
            reply = self.recv()
            if "q" not in reply:
                return reply
            self.serve(reply)

    def request(self, op: str, **fields):
        """Send a request and return the decoded reply value (or raise the decoded exception)."""
        tracked = fields.pop("_tracked", ())
        reply = self.exchange({"q": op, **fields})
        try:
            for index, value in reply.get("m", ()):
                values.write_back(tracked[index], self.decode(value))
            if "x" not in reply:
                return self.decode(reply.get("r"))
            error = self.decode_exception(reply["x"])
        except Exception as exc:  # whatever the other side sent, it was not a valid reply
            self._lose(f"protocol violation: malformed reply ({type(exc).__name__})")
        raise error

    def call(self, target, args, kwargs):
        tracked: list = []
        enc_args = [self._tracked_arg(a, tracked) for a in args]
        enc_kw = [[k, self._tracked_arg(v, tracked)] for k, v in kwargs.items()]
        return self.request("call", h=_hid_of(target), a=enc_args, k=enc_kw, _tracked=tracked)

    def _tracked_arg(self, value, tracked: list):
        enc = self.encode(value)
        if isinstance(value, (list, dict, set, bytearray, collections.deque)) and isinstance(
            enc, dict
        ):
            enc["m"] = len(tracked)
            tracked.append(value)
        return enc

    # -- serving --

    def serve(self, msg: dict) -> None:
        """Run one of the other side's requests on our objects and send the reply; whatever the
        request or the code it runs does, the reply is a value or an exception."""
        free = msg.get("free")
        for hid in free if isinstance(free, list) else ():
            obj = self.exports.pop(hid, None) if isinstance(hid, int) else None
            if obj is not None:
                self.export_ids.pop(id(obj), None)
        tracked: list = []
        self.depth += 1
        try:
            handler = self.policy.get(msg.get("q"))
            if handler is None:
                raise PermissionError(f"sandbox: operation {msg.get('q')!r} is not allowed")
            reply = {"r": self.encode(handler(self, msg, tracked))}
        except Lost:
            raise
        except BaseException as exc:  # SystemExit too: it is the called code's outcome
            reply = {"x": self.encode_exception(exc)}
        finally:
            self.depth -= 1
        try:
            if tracked:
                reply["m"] = [[i, self.encode(obj)] for i, obj in tracked]
            self.send(reply)
        except (TooLarge, RecursionError, ValueError, TypeError) as exc:
            self.send({"x": self.encode_exception(exc)})

    def arg(self, msg: dict, key: str):
        return self.decode(msg.get(key))

    def decode_arg(self, value, tracked: list):
        """A call argument; a mutable one is remembered so its new contents go back."""
        obj = self.decode(value)
        if isinstance(value, dict) and isinstance(value.get("m"), int):
            tracked.append((value["m"], obj))
        return obj

    def target(self, msg: dict):
        hid = msg.get("h")
        if hid not in self.exports:
            raise LookupError(f"sandbox: unknown handle {hid!r}")
        return self.exports[hid]

    # -- encoding --

    def export(self, obj) -> int:
        hid = self.export_ids.get(id(obj))
        if hid is None:
            hid, self.next_hid = self.next_hid, self.next_hid + 1
            self.exports[hid] = obj
            self.export_ids[id(obj)] = hid
        return hid

    def encode(self, v):
        return values.encode(v, self._reference)

    def _reference(self, v) -> dict:
        if isinstance(v, proxy.Remote) and object.__getattribute__(v, "_ep") is self:
            return {"O": object.__getattribute__(v, "_hid")}  # the other side's object, home
        if isinstance(v, type) and getattr(v, "_sandbox_ep", None) is self:
            return {"O": v._sandbox_hid}  # a mirrored exception class goes home as itself
        return self._handle(v)

    def _handle(self, v) -> dict:
        kind = "o"
        if isinstance(v, type):
            kind = "e" if issubclass(v, BaseException) else "c"
        elif callable(v):
            kind = "f"
        elif isinstance(v, types.ModuleType):
            kind = "m"
        out = {"H": self.export(v), "K": kind, "C": proxy.capabilities(v)}
        name = getattr(v, "__name__", None) if kind != "o" else None
        out["N"] = name if isinstance(name, str) else type(v).__name__
        if kind == "e":
            out["BS"] = [c.__name__ for c in v.__mro__ if c.__module__ == "builtins"]
        qual, owner = getattr(v, "__qualname__", None), getattr(v, "__module__", None)
        if isinstance(owner, str) and owner.startswith("_"):
            owner = owner[1:]  # C accelerators: _bisect.bisect_left is bisect.bisect_left
        if kind in ("f", "c") and isinstance(qual, str) and owner in SAFE_MODULES:
            out["R"] = [owner, qual]
        return out

    def encode_exception(self, exc: BaseException) -> dict:
        cls = type(exc)
        try:
            args = self.encode(tuple(exc.args))
        except Exception:
            args = {"T": []}
        try:
            text = str(exc)[:2000]
        except Exception:
            text = "<unprintable>"
        if cls.__module__ == "builtins":
            return {"b": cls.__name__, "a": args, "s": text}
        return {"c": self.encode(cls), "a": args, "s": text,
                "bs": [c.__name__ for c in cls.__mro__ if c.__module__ == "builtins"]}  # fmt: skip

    # -- decoding --

    def decode(self, v):
        return values.decode(v, self._resolve, self.tainted)

    def _resolve(self, tag: str, v: dict):
        if tag == "O":
            if v["O"] not in self.exports:
                raise ValueError(f"unknown handle {v['O']!r}")
            return self.exports[v["O"]]
        return self._proxy(v)

    def _proxy(self, v: dict):
        hid, kind, name = v["H"], v.get("K"), str(v.get("N", ""))
        if not isinstance(hid, int):
            raise ValueError("bad handle")
        if kind == "e":
            return self._mirror(hid, name, v.get("BS", ()))
        found = self.proxies.get(hid)
        if found is None:
            if hid in self.freed:
                self.freed.remove(hid)
            found = proxy.proxy_class(kind, v.get("C"))(self, hid, kind, name)
            self.proxies[hid] = found
        return found

    def _mirror(self, hid: int, name: str, bases) -> type:
        """A local stand-in for one of the other side's exception classes, under its nearest
        builtin base, so `except ValueError` (and `except TheirError`) work in test code."""
        cls = self.mirrors.get(hid)
        if cls is None:
            base = next((b for b in (getattr(builtins, n, None) for n in bases)
                         if isinstance(b, type) and issubclass(b, BaseException)), Exception)  # fmt: skip
            try:
                cls = type(name or "RemoteError", (base,), {})
            except TypeError:
                cls = type(name or "RemoteError", (Exception,), {})
            cls.__module__ = "solution"
            cls._sandbox_hid, cls._sandbox_ep = hid, self
            self.mirrors[hid] = cls
        return cls

    def decode_global(self, name: str, v):
        """A value from the solution's namespace. Under the name of a stdlib module (SAFE_MODULES),
        anything but plain data or a function is the tester's own module: a solution cannot hand
        the tests a `math` whose `isclose` always says yes. A stdlib function bound under its
        own name (`from math import isclose`) is the tester's own copy too."""
        if isinstance(v, dict) and "H" in v:
            if name in SAFE_MODULES and v.get("K") != "f":
                return importlib.import_module(name)
            ref = v.get("R")
            if isinstance(ref, list) and len(ref) == 2 and ref[0] in SAFE_MODULES:
                owner, qual = str(ref[0]), str(ref[1])
                if qual == name:
                    resolved = getattr(importlib.import_module(owner), qual, None)
                    if resolved is not None:
                        return resolved
        return self.decode(v)

    def decode_exception(self, x: dict) -> BaseException:
        if "b" in x:
            cls = getattr(builtins, str(x["b"]), None)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                cls = RemoteError
        else:
            cls = self.decode(x["c"])
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                cls = self._mirror(-1, "RemoteError", x.get("bs", ()))
        try:
            args = self.decode(x.get("a", {"T": []}))
        except ValueError:
            args = ()
        try:
            exc = cls(*args) if isinstance(args, tuple) else cls(str(x.get("s", "")))
        except Exception:
            try:
                exc = cls(str(x.get("s", "")))
            except Exception:
                exc = RemoteError(str(x.get("s", "")))
        exc._remote = True
        return exc


def _hid_of(target) -> int:
    return object.__getattribute__(target, "_hid")
