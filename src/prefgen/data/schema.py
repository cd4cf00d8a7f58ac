"""The Arrow schemas: the in-flight prompt row and the three output tables.

In flight, one row per prompt carries real nested types: messages and responses as lists of
structs, per-judge scores as maps, what judges and curation record per prompt as typed
columns. Stages read and write plain dicts of that shape (`prefgen.data.rows.to_rows` and
`to_table`, one Arrow conversion per stage batch and no JSON); every table is built against
`ROW_SCHEMA`, so Ray Data never has to unify drifting types between blocks. The only opaque
part is `extra`: the record's own fields that prefgen does not interpret, serialized once at
ingest and parsed once at the sink, where they become `prompt_meta` again.

On disk every writer uses the explicit schemas below: `pairs/` in TRL's conversational
preference format (prompt/chosen/rejected as message lists), `responses/` as the wide table
(one row per response with every score, so pairs can be rebuilt without re-judging), and
`rejects/` (one row per dropped input record or prompt, with the stage and reason).
"""

from __future__ import annotations

import json

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
# Per-judge scores of a pair's sides: a list of {name, score}, not an Arrow map, because
# Hugging Face `datasets` cannot load maps and the pairs table must load there as is (TRL).
SCORES = pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())]))
PAIR_SCORE_COLUMNS = ("chosen_scores", "rejected_scores")

SCORE_MAP = pa.map_(pa.string(), pa.float64())
TEXT_MAP = pa.map_(pa.string(), pa.string())

RESPONSE = pa.struct(
    [
        ("model", pa.string()),
        ("sample", pa.int32()),
        ("text", pa.string()),
        ("finish_reason", pa.string()),  # stop | length | error: ...
        ("n_tokens", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("system_prompt", pa.string()),
        ("principle", pa.string()),
        ("verbalized_probability", pa.float64()),
        ("gen_seconds", pa.float64()),  # this response's share of its engine call
        ("scores", SCORE_MAP),
        ("rationales", TEXT_MAP),
        ("judge_status", TEXT_MAP),
        ("overall", pa.float64()),
    ]
)
ORDER = pa.struct([("verdict", pa.string()), ("p_a", pa.float64())])
COMPARISON = pa.struct(
    [
        ("a", pa.int32()),
        ("b", pa.int32()),
        ("ab", ORDER),
        ("ba", ORDER),
        ("p_a_wins", pa.float64()),
        ("winner", pa.int32()),
        ("consistent", pa.bool_()),
    ]
)
# What a pairwise or listwise judge records about a prompt (prompt_meta.judges.<name>).
JUDGE_RECORD = pa.struct(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("comparisons", pa.list_(COMPARISON)),  # pairwise
        ("consistent_share", pa.float64()),  # pairwise
        ("permutation", pa.list_(pa.int32())),  # listwise: response index at each position
    ]
)
# An ensemble's inter-judge agreement on a prompt (prompt_meta.judge_agreement.<name>).
AGREEMENT = pa.struct(
    [
        ("name", pa.string()),
        ("kendall_tau", SCORE_MAP),
        ("pair_order_agreement", SCORE_MAP),
        ("mean_kendall_tau", pa.float64()),
        ("mean_pair_order_agreement", pa.float64()),
    ]
)
DOMAIN_TAG = pa.struct([("label", pa.string()), ("p", pa.float64()), ("by", pa.string())])
PAIR = pa.struct(
    [
        ("id", pa.string()),
        ("prompt_id", pa.string()),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("domain", pa.string()),
        ("judge", pa.string()),
        ("strategy", pa.string()),
        ("chosen_sample", pa.int32()),
        ("rejected_sample", pa.int32()),
        ("chosen_system_prompt", pa.string()),
        ("rejected_system_prompt", pa.string()),
        ("chosen_scores", SCORE_MAP),
        ("rejected_scores", SCORE_MAP),
        ("strength", pa.int8()),
        ("judge_agreement", pa.float64()),
        ("routing_score", pa.float64()),
        ("label_source", pa.string()),
        ("rm_margin", pa.float64()),
    ]
)
DROPPED = pa.struct([("pair_id", pa.string()), ("reason", pa.string()), ("pair", PAIR)])

ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),  # input file the record came from
        ("index", pa.int64()),  # record number within that file
        ("shard", pa.int32()),  # unit of commit and resume (prefgen.run.shards)
        ("status", pa.string()),  # ok | rejected
        ("stage", pa.string()),  # where a rejected row was rejected
        ("reason", pa.string()),
        ("raw", pa.string()),  # the original record (a preview once parsed), for rejects
        ("messages", MESSAGES),
        ("domain", pa.string()),
        ("reference", pa.string()),
        ("tests", pa.list_(pa.string())),  # code verifier: test statements, or [test code]
        ("tests_are_code", pa.bool_()),  # tests is one string of test code, not statements
        ("extra", pa.string()),  # JSON: the record's other fields, parsed only at the sink
        ("source_name", pa.string()),  # input.sources: which source the record came from
        ("assigned_models", pa.list_(pa.string())),  # generate.models_per_prompt
        ("prompt_quality", pa.float64()),  # ingest.quality_filter
        ("domain_tag", DOMAIN_TAG),  # ingest.domain_tagger
        ("route", pa.string()),  # route: who labels the prompt (reward_model | judges)
        ("responses", pa.list_(RESPONSE)),
        ("judge_records", pa.list_(JUDGE_RECORD)),
        ("agreement", pa.list_(AGREEMENT)),
        ("pairs", pa.list_(PAIR)),
        ("dropped", pa.list_(DROPPED)),  # pairs a filter removed, with why
        ("stage_seconds", SCORE_MAP),  # each stage's share of its batches' time
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("domain", pa.string()),
        ("judge", pa.string()),
        ("strategy", pa.string()),
        ("meta", pa.string()),  # JSON: samples, system prompts, per-score breakdown, prompt meta
        ("rm_margin", pa.float64()),  # reward-model margin, when the reward_model filter ran
        # Curation columns (prefgen.pairing.strategies). Writers that lack them get nulls; build_pairs
        # fills them all.
        ("chosen_scores", SCORES),  # per-judge scores, native scales (reward-augmented export)
        ("rejected_scores", SCORES),
        ("strength", pa.int8()),  # HelpSteer3-style -3..+3; > 0: chosen better (label_source)
        ("judge_agreement", pa.float64()),  # share of judges preferring chosen, ties half
        ("routing_score", pa.float64()),  # 0..1, how much the pair needs a human (Hybrid Prefs)
        ("label_source", pa.string()),  # judge | reward_model (route) | human (audit merge)
    ]
)

RESPONSE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", MESSAGES),
        ("domain", pa.string()),
        ("reference", pa.string()),
        ("model", pa.string()),
        ("sample", pa.int32()),
        ("system_prompt", pa.string()),
        ("principle", pa.string()),  # generate.principles: whose system prompt was drawn
        ("verbalized_probability", pa.float64()),  # Verbalized Sampling: the model's own estimate
        ("text", pa.string()),
        ("finish_reason", pa.string()),
        ("n_tokens", pa.int32()),
        ("gen_seconds", pa.float64()),
        ("scores", pa.map_(pa.string(), pa.float64())),
        ("rationales", pa.map_(pa.string(), pa.string())),
        ("judge_status", pa.map_(pa.string(), pa.string())),
        ("overall", pa.float64()),
        ("no_pair_reason", pa.string()),  # set on every response of a prompt that gave no pair
        (
            "prompt_meta",
            pa.string(),
        ),  # JSON: the prompt's fields and what judges recorded per prompt
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("index", pa.int64()),
        ("stage", pa.string()),  # ingest | pair | filter
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

TABLES = {"pairs": PAIR_SCHEMA, "responses": RESPONSE_SCHEMA, "rejects": REJECT_SCHEMA}


def score_dict(value) -> dict[str, float]:
    """Per-judge scores as a dict, however they were stored: a dict, {name, score} entries
    (the pairs table), or (key, value) pairs (an Arrow map read back)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in value:
        if isinstance(item, dict):
            out[item["name"]] = item["score"]
        else:
            key, score = item
            out[key] = score
    return out


def decode_pair(pair: dict) -> dict:
    """A pairs-table row as read back: `meta` parsed, stored score entries as dicts."""
    meta = pair.get("meta")
    out = dict(pair, meta=json.loads(meta) if isinstance(meta, str) else (meta or {}))
    for key in PAIR_SCORE_COLUMNS:
        if isinstance(out.get(key), list):
            out[key] = score_dict(out[key])
    return out


def pairs_table(records: list[dict]) -> pa.Table:
    """Pair records (scores as dicts) -> an Arrow table with PAIR_SCHEMA: every writer's path."""
    rows = [
        {
            **r,
            **{
                k: [{"name": n, "score": v} for n, v in score_dict(r.get(k)).items()]
                if r.get(k) is not None
                else None
                for k in PAIR_SCORE_COLUMNS
            },
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)
