"""The tester: run the test code against proxies of the solution and write the verdict.

Forked from the sandbox's init, so it holds the tests (the solution process never sees them), and
it never runs a line of the solution: each use of a solution name is a call into the solution
process (`rpc`). The records go to the result pipe, which only this process holds; the solution
process has no descriptor for it, cannot see or trace this process (non-dumpable, another uid
where there is one, seccomp), and sends nothing here that is ever executed. So whatever the
solution patches, prints or exits with, it can only make its own tests fail.

Records, one JSON object per line: sandbox (first, before the solution loads), then load_error |
setup_error | loaded, one test record per test in order, and done. lost (phase, i, why) ends the
stream when the solution process is gone or broke the protocol; error when the tester itself fails.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import re
import sys
import types

if __package__:
    from . import policy, rpc, values
else:  # inside the sandbox, run as a script: the siblings are plain modules
    import policy
    import rpc
    import values

DETAIL_CHARS = 300
MAX_TAINTED = 20_000
_PICKLE_OK = (
    {
        ("builtins", n)
        for n in (
            "set",
            "frozenset",
            "complex",
            "bytearray",
            "range",
            "slice",
            "list",
            "dict",
            "tuple",
        )
    }
    | {  # fmt: skip
        ("collections", n) for n in ("OrderedDict", "deque", "Counter", "defaultdict")
    }
    | {("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")}
    | {("decimal", "Decimal"), ("fractions", "Fraction"), ("copyreg", "_reconstructor")}
)
_FD_PATH = re.compile(r"^/(?:proc/[^/]+|dev)/fd(?:info)?/(\d+)$")


def _recorder(fd: int):
    """Write one record. Bound now, so test code that patches os or json later changes nothing."""
    write, dumps = os.write, json.dumps

    def record(rec: dict) -> None:
        write(fd, (dumps(rec) + "\n").encode())

    return record


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:DETAIL_CHARS]


class SolutionModule(types.ModuleType):
    """`import solution` in test code: the solution's names as loaded, and anything else (or a
    later assignment, e.g. mock.patch) forwarded to the real module in the solution process."""

    def __init__(self, remote, names: dict):
        super().__init__("solution")
        self.__dict__.update(names)
        self.__dict__["_sandbox_remote"] = remote

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["_sandbox_remote"], name)

    def __setattr__(self, name, value):
        setattr(self.__dict__["_sandbox_remote"], name, value)
        self.__dict__[name] = value

    def __delattr__(self, name):
        delattr(self.__dict__["_sandbox_remote"], name)
        self.__dict__.pop(name, None)


def _echo(key: str, text: str) -> None:
    """The solution's prints, written where the test code currently points stdout/stderr."""
    stream = sys.stdout if key == "o" else sys.stderr
    try:
        stream.write(text)
    except Exception:
        pass


def _guard(ep: rpc.Endpoint, result_fd: int):
    """An audit hook against the way data could become code here: test code that compiles or
    unpickles what the solution returned (`eval(f(x))`), or opens the result pipe by its number.
    Python's audit hooks are not a sandbox, but this process runs only test code, which is not
    trying to get around them."""
    tainted = ep.tainted

    def hook(event, args):
        if event == "compile":
            if values.compiling_internally():
                return
            source = args[0]
            if isinstance(source, (bytes, bytearray)):
                source = bytes(source).decode("utf-8", "replace")
            if isinstance(source, str) and (
                len(tainted) > MAX_TAINTED or any(t in source for t in tainted)
            ):
                raise PermissionError("sandbox: the tester does not compile the solution's output")
        elif event == "pickle.find_class" and tuple(args[:2]) not in _PICKLE_OK:
            raise PermissionError("sandbox: the tester unpickles plain data only")
        elif event.startswith("ctypes."):
            raise PermissionError("sandbox: ctypes is not available in the tester")
        elif event == "open":
            path = args[0]
            if isinstance(path, bytes):
                path = path.decode("utf-8", "replace")
            match = _FD_PATH.match(os.path.normpath(path)) if isinstance(path, str) else None
            if path == result_fd or (match and int(match.group(1)) == result_fd):
                raise PermissionError("sandbox: the result channel is not for test code")

    sys.addaudithook(hook)


def _ready_ok(ready) -> str:
    """'' if the solution process reports itself locked down, else what is wrong."""
    if not isinstance(ready, dict):
        return "no lockdown report"
    if ready.get("caps") != "00" * 24:
        return f"it has capabilities ({ready.get('caps')})"
    if ready.get("no_new_privs") != 1:
        return "no_new_privs is off"
    if ready.get("seccomp") != 2:
        return "no seccomp filter"
    return ""


def run(cfg: dict, result_fd: int, sock, watch_fd: int, mechanisms: dict) -> None:
    record = _recorder(result_fd)
    record({"e": "sandbox", "mechanisms": mechanisms})
    ep = rpc.Endpoint(sock, policy.TESTER_POLICY, watch_fd=watch_fd)
    ep.on_text = _echo
    try:
        ready = ep.recv().get("ready")
    except rpc.Lost as exc:
        record({"e": "lost", "phase": "start", "why": str(exc)})
        return
    problem = _ready_ok(ready)
    if problem:
        record({"e": "error", "detail": f"solution process not locked down: {problem}"})
        return
    ep.tainted = set()
    try:
        reply = ep.exchange({"q": "load", "code": cfg["solution"]})
        if "load_error" in reply:
            record({"e": "load_error", "detail": str(reply["load_error"])[:DETAIL_CHARS]})
            return
        try:
            names = {str(n): ep.decode_global(str(n), v) for n, v in reply["names"]}
            module = SolutionModule(ep.decode(reply["module"]), names)
        except Exception as exc:
            ep._lose(f"protocol violation: a bad namespace ({type(exc).__name__})")
    except rpc.Lost as exc:
        record({"e": "lost", "phase": "load", "why": str(exc)})
        return
    sys.modules["solution"] = module  # test code may `from solution import f`
    # The solution's names are in scope for the tests, as in HumanEval, except where they would
    # shadow a builtin: a solution's own `abs` or `all` must not decide `abs(f(x) - y) < eps`.
    # (`from solution import abs` still gets it, explicitly.)
    shadowing = set(dir(builtins))
    namespace = {n: v for n, v in names.items() if n not in shadowing}
    namespace.update(__name__="tests", __builtins__=builtins)
    try:
        setup = compile(cfg["setup"], "tests.py", "exec")
    except (SyntaxError, ValueError) as exc:
        record({"e": "setup_error", "detail": "test setup: " + _describe(exc), "blame": "tests"})
        return
    tests = []
    for i, code in enumerate(cfg["tests"]):
        try:
            tests.append(compile(code, f"test_{i}", "exec"))
        except (SyntaxError, ValueError) as exc:
            tests.append(exc)
    _guard(ep, result_fd)
    try:
        exec(setup, namespace)
    except BaseException as exc:
        if ep.lost is not None:
            record({"e": "lost", "phase": "setup", "why": ep.lost})
            return
        theirs = getattr(exc, "_remote", False) or isinstance(exc, NameError)
        theirs = theirs or (isinstance(exc, ImportError) and exc.name == "solution")
        blame = "solution" if theirs or ep.callback_failures else "tests"
        record({"e": "setup_error", "detail": "test setup: " + _describe(exc), "blame": blame})
        return
    record({"e": "loaded"})
    for i, code in enumerate(tests):
        ep.callback_failures.clear()
        status, detail = "pass", ""
        try:
            if isinstance(code, BaseException):
                raise code
            exec(code, namespace)
        except rpc.Lost:
            pass
        except MemoryError:
            status, detail = "crash", "MemoryError (memory limit)"
        except OSError as exc:
            status = "crash" if exc.errno == errno.EFBIG else "fail"
            detail = ("file size limit: " if status == "crash" else "") + _describe(exc)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
            status, detail = "fail", _describe(exc)
        if ep.lost is not None:  # however the test code handled it, the solution is gone
            record({"e": "lost", "phase": "test", "i": i, "why": ep.lost})
            return
        if status == "pass" and ep.callback_failures:  # the solution swallowed a failed assert
            status, detail = "fail", ep.callback_failures[0]
        record({"e": "test", "i": i, "status": status, "detail": detail})
    record({"e": "done"})
