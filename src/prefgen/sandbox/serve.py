"""The solution process: load the solution, then answer the tester's calls until it hangs up.

Runs as `python -I -S /sandbox/serve.py` inside the sandbox's private root, a fresh interpreter
(exec'd, so nothing of the sandbox's memory, the tests included, is in this process), with the
connection on fd 3 and no capabilities, no_new_privs, the seccomp filter and the rlimits already
applied. Nothing here is trusted: the solution may patch anything in this process, and all that
changes is what this process answers. Its prints during a call travel with the reply, so a test
that captures stdout sees them; `input()` and `sys.stdin` read the tester's.
"""

import builtins
import ctypes
import os
import socket
import struct
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policy  # noqa: E402
import rpc  # noqa: E402

sys.path.pop(0)

SOCKET_FD = 3
NAME_BYTES = 1 << 20  # a global bigger than this as JSON goes as a handle, not by value


class _Output:
    """sys.stdout/sys.stderr: during a call, text goes back with the reply; otherwise (while the
    solution loads) straight to the run's output file."""

    def __init__(self, ep: rpc.Endpoint, key: str, real):
        self._ep, self._key, self._real, self._sent = ep, key, real, 0
        self.encoding, self.errors = "utf-8", "replace"

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._ep.depth == 0:
            return self._real.write(text)
        if self._sent < rpc.MAX_TEXT:
            text = text[: rpc.MAX_TEXT - self._sent]
            self._sent += len(text)
            self._ep.out.append((self._key, text))
        return len(text)

    def flush(self):
        self._real.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self._real.fileno()


class _Input:
    """sys.stdin: reads the tester's sys.stdin (which a test may have replaced)."""

    def __init__(self, ep: rpc.Endpoint):
        self._ep = ep

    def read(self, n=-1):
        return self._ep.request("read", n=n)

    def readline(self, n=-1):
        return self._ep.request("read", n=n, line=True)

    def readlines(self):
        return list(iter(self.readline, ""))

    def __iter__(self):
        return iter(self.readline, "")

    def isatty(self):
        return False


def _lockdown_report() -> dict:
    """What the tester checks before it sends the solution: no capabilities, no_new_privs, a
    seccomp filter (asked of the kernel directly: /proc may be an empty placeholder). A solution
    process that is not locked down is never given code to run."""
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    caps = ctypes.create_string_buffer(24)
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0), 8)
    capget = libc.capget(header, caps)
    return {
        "caps": caps.raw.hex() if capget == 0 else "unknown",
        "no_new_privs": libc.prctl(39, ulong(0), ulong(0), ulong(0), ulong(0)),  # PR_GET_...
        "seccomp": libc.prctl(21, ulong(0), ulong(0), ulong(0), ulong(0)),  # 2: a filter
    }


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]


def _names(ep: rpc.Endpoint, namespace: dict) -> list:
    out = []
    for name, value in list(namespace.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        try:
            enc = ep.encode(value)
            if len(rpc.json.dumps(enc)) > NAME_BYTES:
                enc = ep._handle(value)
        except Exception:
            enc = ep._handle(value)
        out.append([name, enc])
    return out


def main() -> None:
    sock = socket.socket(fileno=SOCKET_FD)
    ep = rpc.Endpoint(sock, policy.FULL_POLICY)
    ep.send({"ready": _lockdown_report()})
    load = ep.recv()
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module  # the solution may import itself
    sys.stdout = _Output(ep, "o", sys.stdout)
    sys.stderr = _Output(ep, "e", sys.stderr)
    sys.stdin = _Input(ep)
    builtins.input = lambda prompt="": ep.request("input", p=str(prompt))
    try:
        exec(compile(str(load.get("code", "")), "solution.py", "exec"), module.__dict__)
    except BaseException as exc:  # SystemExit too: exiting before the tests is a load failure
        detail = "solution failed to load: " + _describe(exc)
        del exc
        module.__dict__.clear()  # after a MemoryError, free what it held before replying
        ep.send({"load_error": detail})
        return
    ep.send({"names": _names(ep, module.__dict__), "module": ep._handle(module)})
    while True:
        msg = ep.recv()
        if "q" in msg:
            ep.serve(msg)


if __name__ == "__main__":
    try:
        main()
    except rpc.Lost:
        pass  # the tester hung up: the run is over
    except BaseException:
        import traceback

        traceback.print_exc(file=sys.__stderr__)  # a fault of this server, not of the solution
    finally:
        try:
            sys.__stdout__.flush()
            sys.__stderr__.flush()
        except BaseException:
            pass
        os._exit(0)
