"""Property: whatever hostile code a solution is built from, the sandbox returns a real verdict.

Hypothesis composes solutions from building blocks (exit codes, signals, writes to and closes of
file descriptors, monkeypatching the names a harness would use, endless loops and sleeps, large
allocations, forks, threads, atexit hooks, forged objects), at import time and inside the tested
function. For every one: run_tests returns (nothing escapes as an exception) within the wall limit
plus the host's backstop, the status is one of the documented ones, only the test that the honest
part of the code can satisfy may pass, the tests no code can satisfy never pass, a run that is a
sandbox error or tampered scores 0, and every test that did not pass says why.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox.escapes import Limits

from prefgen.sandbox.runner import GRACE_S, TestCase, run_tests

CFG = Limits(wall_s=2.0, cpu_s=1)
STATUSES = {"ok", "load_error", "setup_error", "exited", "crashed", "timeout", "cpu_limit",
            "tampered", "sandbox_error"}  # fmt: skip
SLACK_S = 20.0  # a busy 2-core machine: this bounds a hang, it does not time the sandbox
FRAME = "__import__('struct').pack('>I', 11) + b'{\"r\": true}'"

BLOCKS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 77, 125, 126, 127, 128, 255]).map(lambda c: f"os._exit({c})"),
    st.sampled_from([0, 1, 2, "'boom'"]).map(lambda c: f"sys.exit({c})"),
    st.sampled_from(["KeyboardInterrupt", "SystemExit(0)", "MemoryError", "GeneratorExit"]).map(
        lambda e: f"raise {e}"
    ),
    st.tuples(
        st.sampled_from(["os.getpid()", "0", "1", "2", "-1", "-2", "os.getppid()"]),
        st.sampled_from(["SIGTERM", "SIGKILL", "SIGSEGV", "SIGSTOP", "SIGUSR1", "SIGXCPU"]),
    ).map(lambda t: f"os.kill({t[0]}, signal.{t[1]})"),
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 63, 255]),
        st.sampled_from(['b\'{"e": "done"}\\n\'', "b'\\xff' * 8", FRAME, "b'pass\\n' * 100"]),
    ).map(lambda t: f"os.write({t[0]}, {t[1]})"),
    st.sampled_from([0, 1, 2, 3, 4, 5]).map(lambda fd: f"os.close({fd})"),
    st.just("os.closerange(3, 256)"),
    st.sampled_from(
        ["print", "exec", "compile", "AssertionError", "isinstance", "len", "repr"]
    ).map(lambda name: f"setattr(builtins, {name!r}, None)"),
    st.sampled_from(
        [
            "json.dumps = lambda *a, **k: '{}'",
            "json.loads = lambda *a, **k: {'e': 'done'}",
            "sys.stdout = None",
            "sys.modules['json'] = None",
            "socket.socket.sendall = lambda *a, **k: None",
            "os.write = lambda *a: 0",
        ]
    ),
    st.sampled_from(
        [
            "while True: pass",
            "time.sleep(100)",
            "[0] * (1 << 40)",
            "bytearray(1 << 26)",
            "b = [bytearray(1 << 20) for _ in range(300)]",
        ]
    ),
    st.sampled_from(
        [
            "os.fork()",
            "os.fork() or os.wait()",
            "threading.Thread(target=os._exit, args=(0,)).start()",
            "atexit.register(os._exit, 0)",
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
            "[f.f_locals.get('record') for f in [sys._getframe()]]",
        ]
    ),  # fmt: skip
)


def _solution(at_import: list[str], in_function: list[str], result: str) -> str:
    lines = ["import atexit, builtins, json, os, signal, socket, sys, threading, time"]
    lines += [f"try:\n    {b}\nexcept Exception:\n    pass" for b in at_import]
    lines += ["def f():"] + [f"    {b}" for b in in_function] + [f"    return {result}"]
    return "\n".join(lines) + "\n"


TESTS = [
    TestCase("honest", "assert f() == 1"),  # the only one the code can pass
    TestCase("unknown value", "assert f() == 'a value no solution is ever shown'"),
    TestCase("impossible", "assert False"),
]
ALWAYS_EQUAL = "type('E', (), {'__eq__': lambda s, o: True, '__hash__': lambda s: 0})()"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    at_import=st.lists(BLOCKS, max_size=2),
    in_function=st.lists(BLOCKS, max_size=2),
    result=st.sampled_from(["1", ALWAYS_EQUAL, "'x' * (1 << 25)", "[[]] * 10", "f"]),
)
def test_hostile_code_gets_a_real_verdict(at_import, in_function, result):
    result = run_tests(_solution(at_import, in_function, result), "", TESTS, CFG)
    assert result.wall_s <= CFG.wall_s + GRACE_S + SLACK_S, result
    assert result.status in STATUSES, result
    assert result.status != "sandbox_error", result  # hostile code is contained, not an error
    passed = [t.name for t in result.tests if t.status == "pass"]
    assert set(passed) <= {"honest"}, result
    if result.status == "tampered":
        assert result.passed == 0
    for outcome in result.tests:
        assert outcome.status in ("pass", "fail", "timeout", "crash", "not_run"), outcome
        if outcome.status != "pass":
            assert outcome.detail.strip(), (outcome, result)
        assert "Traceback" not in outcome.detail
    assert "Traceback" not in result.detail
