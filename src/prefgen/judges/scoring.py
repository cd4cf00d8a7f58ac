"""Scoring stage without a model: the math verifier and the `overall` aggregate.

Input: prompt rows whose responses carry judge scores. Output: each response gains
`scores[<verifier name>]` (0/1, math prompts with a reference only) with its rationale, and
`overall`: the configured weighted mean of its scores, each first rescaled to 1-10, so the
pairing margin (default 2 on 1-10, COIG-P) means the same whichever scorers are on.
"""

from __future__ import annotations

import pyarrow as pa

from prefgen.config import MathVerifierConfig
from prefgen.judges.aggregate import overall_score
from prefgen.judges.math_verifier import verify_math
from prefgen.rows import decode_batch, encode_batch, is_ok


def score_row(
    row: dict,
    verifier: MathVerifierConfig,
    weights: dict[str, float],
    scales: dict[str, tuple[float, float]],
) -> dict:
    if not is_ok(row):
        return row
    check_math = verifier.enabled and row["reference"] and row["domain"] in verifier.domains
    for response in row["responses"]:
        if check_math and not response["finish_reason"].startswith("error"):
            score, why = verify_math(
                response["text"], row["reference"], verifier.rel_tol, verifier.abs_tol
            )
            if score is not None:
                response["scores"][verifier.name] = score
                response["rationales"][verifier.name] = why
                response["judge_status"][verifier.name] = "ok"
        response["overall"] = overall_score(response["scores"], weights, scales)
    return row


def score_batch(
    batch: pa.Table, verifier: MathVerifierConfig, weights: dict[str, float], scales: dict
) -> pa.Table:
    effective = weights or {name: 1.0 for name in scales}
    return encode_batch([score_row(r, verifier, effective, scales) for r in decode_batch(batch)])
