"""Honest solutions still pass through the tester/solution split: the test code only holds
proxies, so each feature a unit test commonly uses is checked here against a correct solution
(and, where it matters, a wrong one must still fail). One sandbox run holds all the tests.
"""

from __future__ import annotations

import pytest
from sandbox.escapes import Limits

from prefgen.sandbox.runner import TestCase, run_tests

SOLUTION = r"""
import math
from collections import Counter, namedtuple
from math import isclose
import heapq
Point = namedtuple("Point", "x y")
class InvalidInput(ValueError):
    pass
def add(a, b): return a + b
def sqrt2(): return math.sqrt(2)
def big(): return 2 ** 200
def counts(s): return Counter(s)
def rotate(nums, k):
    k %= len(nums); nums[:] = nums[-k:] + nums[:-k]
def forgets_to_rotate(nums, k):
    return nums[-k:] + nums[:-k]
def gen(n):
    for i in range(n): yield i * i
def check(x):
    if x < 0: raise InvalidInput("negative")
    return x
def apply(f, x): return f(x)
def say(x): print("hello", x)
def ask(): return input("name? ").upper()
class Stack:
    def __init__(self): self.items = []
    def push(self, x): self.items.append(x)
    def pop(self): return self.items.pop()
    def __len__(self): return len(self.items)
    def __eq__(self, other): return isinstance(other, Stack) and self.items == other.items
    def __iter__(self): return iter(self.items)
async def aadd(a, b): return a + b
def pt(): return Point(1, 2)
def helper(): return 1
def uses_helper(): return helper() + 1
def floats(): return [0.1 + 0.2, float("nan"), float("inf"), -0.0]
def nested(): return {(1, 2): {"a": [1, {2}]}, None: b"x", "r": range(3), "c": 1 + 2j}
def recursive(n): return 1 if n <= 1 else n * recursive(n - 1)
MOD = 10 ** 9 + 7
"""
SETUP = r"""
import io, contextlib, asyncio
from unittest import mock
def captured(fn, *args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args)
    return buf.getvalue()
async def awaited():
    return await aadd(1, 2)
"""
CASES = {
    "plain call": "assert add(1, 2) == 3 and add('a', 'b') == 'ab'",
    "stdlib from the solution's imports": "assert isclose(sqrt2() ** 2, 2) and math.pi > 3",
    "big int": "assert big() == 2 ** 200 and type(big()) is int",
    "recursion": "assert recursive(30) == __import__('math').factorial(30)",
    "Counter": "assert counts('aab') == {'a': 2, 'b': 1} and isinstance(counts('a'), Counter)",
    "in-place mutation": "nums = [1, 2, 3, 4, 5]\nrotate(nums, 2)\nassert nums == [4, 5, 1, 2, 3]",
    "generator": "assert list(gen(4)) == [0, 1, 4, 9]\ng = gen(3)\nassert next(g) == 0 and next(g) == 1",
    "builtin exception": "try:\n    check(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\nelse:\n    assert False",
    "solution's exception class": "try:\n    check(-1)\nexcept InvalidInput:\n    pass\nelse:\n    assert False",
    "callback": "assert apply(lambda v: v * 2, 21) == 42",
    "class and methods": "s = Stack(); s.push(1); s.push(2)\nassert len(s) == 2 and s.pop() == 2 and s.items == [1] and list(s) == [1]",
    "solution's __eq__ between its objects": "a, b = Stack(), Stack(); a.push(1); b.push(1)\nassert a == b and isinstance(a, Stack)",
    "captured print": "assert captured(say, 3) == 'hello 3\\n'",
    "mocked input": "with mock.patch('builtins.input', return_value='bob'):\n    assert ask() == 'BOB'",
    "mock.patch of a solution name": "import solution\nwith mock.patch.object(solution, 'helper', return_value=10):\n    assert uses_helper() == 11\nassert uses_helper() == 2",
    "async": "assert asyncio.run(awaited()) == 3",
    "namedtuple": "assert pt() == (1, 2) and pt().x == 1",
    "floats": "r = floats()\nassert r[0] == 0.1 + 0.2 and r[1] != r[1] and r[2] == float('inf') and str(r[3]) == '-0.0'",
    "nested values": "assert nested() == {(1, 2): {'a': [1, {2}]}, None: b'x', 'r': range(3), 'c': 1 + 2j}",
    "module constant": "assert MOD == 1000000007",
    "from solution import": "from solution import add as plus\nassert plus(2, 2) == 4",
    "key function": "assert sorted([3, 1, 2], key=lambda v: add(v, 0)) == [1, 2, 3]",
}
WRONG = {  # a wrong solution still fails
    "no in-place mutation": "nums = [1, 2, 3]\nforgets_to_rotate(nums, 1)\nassert nums == [3, 1, 2]",
    "wrong value": "assert add(2, 2) == 5",
}


@pytest.fixture(scope="module")
def outcomes():
    tests = [TestCase(name, code) for name, code in {**CASES, **WRONG}.items()]
    result = run_tests(SOLUTION, SETUP, tests, Limits(wall_s=10.0, cpu_s=5, memory_mb=256))
    assert result.status == "ok", result
    return {t.name: t for t in result.tests}


@pytest.mark.parametrize("name", CASES)
def test_honest_solution_passes(outcomes, name):
    assert outcomes[name].status == "pass", outcomes[name]


@pytest.mark.parametrize("name", WRONG)
def test_wrong_solution_fails(outcomes, name):
    assert outcomes[name].status == "fail", outcomes[name]
