"""Code verifier: score each code response by the share of the prompt's unit tests it passes.

PLUM-style execution judging (docs/research.md "Verifiers: unit tests and final answers"): each response's code runs against the prompt's
tests in `prefgen.sandbox.runner`, so code preference pairs rest on behaviour rather than a judge's
reading. A test counts as passed only from the harness's record written after it ran, never
from an exit code, so a solution that exits 0 at import scores 0.

Test formats, from the record's `cfg.tests_field` (lifted by ingest into the row's `tests`
and `tests_are_code`):
- a list of statements, each one test (HumanEval/MBPP-style asserts; ingest accepts a JSON string of that
  list too);
- one string of test code: its top-level `def test_*` functions are the tests (the string runs
  first as setup, with the solution's names in scope and importable as `solution`); a string
  without test functions but with top-level asserts makes each assert one test.

Input columns: `status`, `domain`, `tests`, `tests_are_code`, `responses`.
Output columns: for ok rows whose domain is in cfg.domains, each non-error response gains
`scores[cfg.name]` (0-1), `rationales[cfg.name]` and `judge_status[cfg.name]`, one of
ok | no_tests | bad_tests | test_error (the tests, not the code, failed to set up: confirmed by
rerunning the setup without the response) | sandbox_error. `ok` carries the share passed;
`sandbox_error` (the sandbox could not contain or judge the run: no isolation on this host, a
setup failure, an anomaly) carries 0, so what cannot be judged safely never counts as a pass or
drops out unscored. The others carry no score (the prompt's tests are at fault, not the response).
Rows are never dropped and nothing raises.
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from prefgen.config import CodeVerifierConfig
from prefgen.data.rows import is_ok
from prefgen.sandbox.runner import TestCase, run_tests

__all__ = ["extract_code", "parse_tests", "verify_rows", "verify_code"]

# A fence, its language tag, and its body up to the closing fence or the end of a cut-off reply.
_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "python3", "py", "py3"}
RATIONALE_CHARS = 1500


def extract_code(text: str | None) -> str:
    """Python source from a reply: its python-tagged blocks joined, else its untagged blocks,
    else the whole text when it has no fence at all ("" when it only has other languages)."""
    text = text or ""
    blocks = [(tag.lower(), body) for tag, body in _FENCE_RE.findall(text)]
    if not blocks:
        return text
    for wanted in (lambda tag: tag in _PYTHON_TAGS, lambda tag: tag == ""):
        chosen = [body.strip("\n") for tag, body in blocks if wanted(tag)]
        if chosen:
            return "\n\n".join(chosen) + "\n"
    return ""


def parse_tests(tests) -> tuple[str, list[TestCase]]:
    """(setup code, test cases) from either format. Raises ValueError on anything else."""
    if isinstance(tests, (list, tuple)):
        cases = []
        for i, statement in enumerate(tests):
            if not isinstance(statement, str) or not statement.strip():
                raise ValueError(f"test {i} is not a non-empty string")
            _parse(statement, f"test {i}")
            cases.append(TestCase(statement.strip().splitlines()[0][:80], statement))
        if not cases:
            raise ValueError("the test list is empty")
        return "", cases
    if not isinstance(tests, str):
        raise ValueError(f"tests must be a list of statements or test code, not {type(tests)}")
    tree = _parse(tests, "test code")
    functions = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
            "test"
        ):
            required = len(node.args.args) - len(node.args.defaults)
            if required > 0 or node.args.kwonlyargs:
                raise ValueError(f"{node.name} takes arguments (pytest fixtures are unsupported)")
            call = f"{node.name}()"
            if isinstance(node, ast.AsyncFunctionDef):
                call = f"__import__('asyncio').run({call})"
            functions[node.name] = call  # a redefinition replaces the earlier test
    if functions:
        return tests, [TestCase(name, call) for name, call in functions.items()]
    asserts = [node for node in tree.body if isinstance(node, ast.Assert)]
    if not asserts:
        raise ValueError("the test code has no top-level test_* functions or asserts")
    setup = ast.unparse(ast.Module([n for n in tree.body if n not in asserts], []))
    cases = [TestCase(ast.unparse(n)[:80], ast.get_source_segment(tests, n)) for n in asserts]
    return setup, cases


def _parse(source: str, what: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"{what} is not valid Python: {exc.msg} (line {exc.lineno})") from None


def verify_code(
    response_text: str, tests, cfg: CodeVerifierConfig
) -> tuple[float | None, str, dict]:
    """(share of tests passed, rationale, details) for one reply. The score is 0 when the sandbox
    failed (fail closed) and None only when the tests themselves are broken (details["judge_status"]
    says which). Raises ValueError on bad tests."""
    setup, cases = parse_tests(tests)
    return _verify(extract_code(response_text), setup, cases, cfg)


def _verify(code: str, setup: str, cases: list[TestCase], cfg) -> tuple[float | None, str, dict]:
    result = run_tests(code, setup, cases, cfg)
    blamed_tests = result.status == "setup_error" and result.blame == "tests"
    if result.status == "sandbox_error":
        judge_status = "sandbox_error"
    else:
        judge_status = "test_error" if blamed_tests else "ok"
    score = None if judge_status == "test_error" else result.passed / len(cases)
    head = f"{result.passed}/{len(cases)} tests passed"
    if result.status != "ok":
        head += f" [{result.status}: {result.detail}]" if result.detail else f" [{result.status}]"
    lines = [f"{t.name}: {t.status}" + (f" ({t.detail})" if t.detail else "") for t in result.tests]
    rationale = "; ".join([head, *lines])[:RATIONALE_CHARS]
    details = {
        "status": result.status,
        "judge_status": judge_status,
        "passed": result.passed,
        "total": len(cases),
        "tests": [asdict(t) for t in result.tests],
        "mechanisms": result.mechanisms,
        "output": result.output,
        "wall_s": result.wall_s,
    }
    return score, rationale, details


def _verify_safely(code: str, setup: str, cases: list[TestCase], cfg) -> tuple:
    try:
        return _verify(code, setup, cases, cfg)
    except Exception as exc:  # a sandbox failure is data, and scores 0: the stage never raises
        return 0.0, f"sandbox failed: {exc!r}"[:RATIONALE_CHARS], {"judge_status": "sandbox_error"}


def _mark(response: dict, name: str, score: float | None, status: str, why: str) -> None:
    if score is not None:
        response["scores"][name] = score
    response["rationales"][name] = why
    response["judge_status"][name] = status


def verify_rows(rows: list[dict], cfg: CodeVerifierConfig) -> list[dict]:
    """Row stage: run every code response of the batch against its prompt's tests, up to
    cfg.max_parallel sandboxes at once."""
    if not cfg.enabled:
        return rows
    jobs = []  # (response, setup, cases)
    for row in rows:
        if not is_ok(row) or row["domain"] not in cfg.domains:
            continue
        responses = [
            r for r in row["responses"] if not (r.get("finish_reason") or "").startswith("error")
        ]
        tests = row.get("tests")
        raw = tests[0] if tests and row.get("tests_are_code") else tests
        if tests is None:
            for response in responses:
                _mark(
                    response,
                    cfg.name,
                    None,
                    "no_tests",
                    f"no tests in the record's {cfg.tests_field!r} field",
                )
            continue
        try:
            setup, cases = parse_tests(raw)
        except ValueError as exc:
            for response in responses:
                _mark(response, cfg.name, None, "bad_tests", f"unusable tests: {exc}")
            continue
        jobs.extend((response, setup, cases) for response in responses)
    if jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(cfg.max_parallel, len(jobs)))) as pool:
            futures = [
                pool.submit(_verify_safely, extract_code(r["text"]), setup, cases, cfg)
                for r, setup, cases in jobs
            ]
            for (response, _, _), future in zip(jobs, futures):
                score, why, details = future.result()
                _mark(response, cfg.name, score, details["judge_status"], why)
    return rows
