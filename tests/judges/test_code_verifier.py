"""Code verifier: code extraction, test parsing, scoring, and `verify_rows` on real rows.

Run: .venv/bin/python -m pytest tests/judges/test_code_verifier.py -q
"""

from __future__ import annotations

import json

import pytest

from prefgen.config import CodeVerifierConfig
from prefgen.data.rows import new_row, reject
from prefgen.ingest.records import lift_tests
from prefgen.judges import code_verifier
from prefgen.judges.code_verifier import extract_code, parse_tests, verify_code, verify_rows

CFG = CodeVerifierConfig(enabled=True, wall_s=3.0, cpu_s=2, memory_mb=256, max_parallel=2)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Here you go:\n```python\n{ADD}```\nDone.", ADD),
        (f"```py\n{ADD}```", ADD),
        # Two python blocks are joined in order; the bash block is not code to run.
        (
            "```bash\npip install x\n```\n```python\nx = 1\n```\n```python\ny = x\n```",
            "x = 1\n\ny = x\n",
        ),
        ("```\nz = 2\n```", "z = 2\n"),  # untagged fence, no python-tagged one
        (f"```python\n{ADD}", ADD),  # reply cut off before the closing fence
        (ADD, ADD),  # no fence: the whole text
        ("```bash\nls\n```", ""),  # only other languages: no python code
        (None, ""),
    ],
)
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_parse_tests_assert_list_and_json_string():
    setup, cases = parse_tests(ADD_TESTS)
    assert setup == "" and [c.code for c in cases] == ADD_TESTS
    # a JSON string of the list is read as the list when the record is ingested
    assert lift_tests(json.dumps(ADD_TESTS)) == (ADD_TESTS, False)
    assert lift_tests("assert add(1, 2) == 3") == (["assert add(1, 2) == 3"], True)
    assert lift_tests([1, 2]) == ([], False) and lift_tests(None) == (None, None)


def test_parse_tests_test_functions():
    code = (
        "from solution import add\n"
        "def helper():\n    return 1\n"
        "def test_one():\n    assert add(1, 2) == 3\n"
        "async def test_async():\n    assert add(0, 0) == 0\n"
        "def test_one():\n    assert add(1, 1) == 2\n"  # redefinition replaces the first
    )
    setup, cases = parse_tests(code)
    assert setup == code
    assert [c.name for c in cases] == ["test_one", "test_async"]
    assert cases[0].code == "test_one()" and "asyncio" in cases[1].code


def test_parse_tests_bare_asserts_in_a_string():
    setup, cases = parse_tests("x = 2\nassert add(x, 1) == 3\nassert add(x, x) == 4\n")
    assert setup.strip() == "x = 2"
    assert [c.code for c in cases] == ["assert add(x, 1) == 3", "assert add(x, x) == 4"]


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ([], "empty"),
        (["assert ("], "not valid Python"),
        ([3], "not a non-empty string"),
        ("def check(candidate):\n    assert candidate(1) == 2\n", "no top-level test_"),
        ("def test_x(tmp_path):\n    pass\n", "pytest fixtures"),
        ({"a": 1}, "tests must be"),
    ],
)
def test_parse_tests_rejects(tests, message):
    with pytest.raises(ValueError, match=message):
        parse_tests(tests)


def test_verify_code_scores_share_passed_with_per_test_statuses():
    wrong = "```python\ndef add(a, b):\n    return a * b if a > 0 else a + b\n```"
    score, why, details = verify_code(wrong, ADD_TESTS, CFG)
    assert score == pytest.approx(2 / 3)  # 1*2 != 3 fails; -1+1 and 2*2 pass
    assert why.startswith("2/3 tests passed")
    assert [t["status"] for t in details["tests"]] == ["fail", "pass", "pass"]
    assert details["judge_status"] == "ok" and details["status"] == "ok"
    assert verify_code(ADD, ADD_TESTS, CFG)[0] == 1.0


def test_verify_code_test_function_format():
    tests = "from solution import add\ndef test_a():\n    assert add(1, 2) == 3\ndef test_b():\n    assert add(1, 2) == 4\n"
    score, why, details = verify_code(ADD, tests, CFG)
    assert score == 0.5
    assert "test_a: pass" in why and "test_b: fail (AssertionError)" in why


def test_verify_code_timeout_and_crash_are_per_test():
    code = ADD + "def spin():\n    while True: pass\n"
    score, why, details = verify_code(code, ["assert add(1, 2) == 3", "spin()", "assert 1"], CFG)
    assert score == pytest.approx(1 / 3)
    assert [t["status"] for t in details["tests"]] == ["pass", "timeout", "not_run"]
    assert details["status"] in ("cpu_limit", "timeout")


def test_exit_zero_before_tests_scores_zero():
    score, why, details = verify_code("import os\nos._exit(0)\n" + ADD, ADD_TESTS, CFG)
    assert score == 0.0 and details["status"] == "exited"
    assert verify_code("raise SystemExit(0)\n" + ADD, ADD_TESTS, CFG)[0] == 0.0


def test_setup_failure_blame():
    missing_name = "from solution import sub\ndef test_a():\n    assert sub(1, 1) == 0\n"
    score, _, details = verify_code(ADD, missing_name, CFG)
    assert score == 0.0 and details["judge_status"] == "ok"  # the solution lacks `sub`
    needs_pytest = "import pytest\ndef test_a():\n    assert add(1, 1) == 2\n"
    score, why, details = verify_code(ADD, needs_pytest, CFG)
    assert score is None and details["judge_status"] == "test_error"  # the tests' fault
    assert "pytest" in why


def _response(text: str, finish_reason: str = "stop") -> dict:
    return {"model": "m", "sample": 0, "text": text, "finish_reason": finish_reason,
            "scores": {}, "rationales": {}, "judge_status": {}, "overall": None}  # fmt: skip


def _row(index: int, domain: str, meta: dict, responses: list[dict]) -> dict:
    row = new_row("test", index, "{}")
    row.update(id=f"p{index}", domain=domain, responses=responses)
    row["tests"], row["tests_are_code"] = lift_tests(meta.get("tests"))  # as ingest does
    row["messages"] = [{"role": "user", "content": "Write add(a, b)."}]
    return row


def test_verify_rows_on_decoded_rows():
    rows = [
        _row(0, "code", {"tests": ADD_TESTS}, [
            _response(f"```python\n{ADD}```"),
            _response("def add(a, b):\n    return abs(a) + b\n"),
            _response("", "error: engine failed"),
        ]),
        _row(1, "code", {}, [_response(ADD)]),
        _row(2, "code", {"tests": "def check(c): pass"}, [_response(ADD)]),
        _row(3, "math", {"tests": ADD_TESTS}, [_response(ADD)]),
        reject(_row(4, "code", {"tests": ADD_TESTS}, [_response(ADD)]), "ingest", "bad"),
    ]  # fmt: skip
    out = verify_rows(rows, CFG)
    assert [r["id"] for r in out] == ["p0", "p1", "p2", "p3", "p4"]  # never drops rows
    good, wrong, errored = out[0]["responses"]
    assert good["scores"]["tests"] == 1.0 and good["judge_status"]["tests"] == "ok"
    assert wrong["scores"]["tests"] == pytest.approx(2 / 3)  # abs(-1) + 1 != 0
    assert wrong["rationales"]["tests"].startswith("2/3 tests passed")
    assert errored["scores"] == {} and errored["judge_status"] == {}
    assert out[1]["responses"][0]["judge_status"]["tests"] == "no_tests"
    assert "tests" not in out[1]["responses"][0]["scores"]
    assert out[2]["responses"][0]["judge_status"]["tests"] == "bad_tests"
    assert out[3]["responses"][0]["judge_status"] == {}  # not a code domain
    assert out[4]["responses"][0]["judge_status"] == {}  # rejected rows are skipped


def test_verify_rows_sandbox_failure_is_data(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("cannot start a sandbox")

    monkeypatch.setattr(code_verifier, "run_tests", broken)
    rows = [_row(0, "code", {"tests": ADD_TESTS}, [_response(ADD)])]
    out = verify_rows(rows, CFG)
    response = out[0]["responses"][0]
    assert response["judge_status"]["tests"] == "sandbox_error"
    assert "cannot start a sandbox" in response["rationales"]["tests"]
    assert response["scores"]["tests"] == 0.0  # fail closed: never unscored, never a pass


def test_a_sandbox_that_cannot_start_scores_zero_with_the_reason():
    """4 MB of address space is too little for the solution's interpreter: the run is a sandbox
    error, and a correct solution still gets 0, not None."""
    tiny = CodeVerifierConfig(enabled=True, wall_s=3.0, cpu_s=1, memory_mb=4)
    score, why, details = verify_code(ADD, ADD_TESTS, tiny)
    assert score == 0.0 and details["judge_status"] == "sandbox_error"
    assert "the solution process failed to start" in why


def test_breaking_the_call_protocol_scores_zero():
    closes = "import os\nos.closerange(0, 1024)\n" + ADD  # takes the connection down with it
    score, why, details = verify_code(closes, ADD_TESTS, CFG)
    assert score == 0.0 and details["judge_status"] == "ok"
    assert details["status"] in ("tampered", "exited")


def test_verify_rows_disabled_is_a_no_op():
    rows = [_row(0, "code", {"tests": ADD_TESTS}, [_response(ADD)])]
    assert verify_rows(rows, CodeVerifierConfig(enabled=False)) is rows
    assert rows[0]["responses"][0]["judge_status"] == {}
