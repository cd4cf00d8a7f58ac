"""Decoded prompt rows for judge tests (a plain module, shared by the judge test files)."""

from __future__ import annotations

from prefgen.data.rows import new_row

_BASE = {
    "sample": 0,
    "finish_reason": "stop",
    "n_tokens": 3,
    "system_prompt": None,
    "gen_seconds": 0.0,
    "scores": {},
    "rationales": {},
    "judge_status": {},
    "overall": None,
}


def response(model: str, text: str, **fields) -> dict:
    fresh = {"scores": {}, "rationales": {}, "judge_status": {}}
    return {**_BASE, **fresh, "model": model, "text": text, **fields}


def math_row(row_id: str = "p1", texts: dict[str, str] | None = None) -> dict:
    """One ok math prompt with a reference and one response per (model, text)."""
    row = new_row("t.jsonl", 0, "{}")
    row.update(
        id=row_id,
        messages=[{"role": "user", "content": "What is 7 + 5?"}],
        domain="math",
        reference="12",
    )
    texts = texts or {
        "right": "7 + 5 = 12. The answer is 12.",
        "wrong": "7 + 5 = 75.",
        "short": "12",
    }
    row["responses"] = [response(model, text) for model, text in texts.items()]
    return row


def rejected_row() -> dict:
    row = new_row("t.jsonl", 1, "not json")
    row.update(status="rejected", stage="ingest", reason="bad_json")
    return row
