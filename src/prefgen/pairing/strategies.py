"""Turn one scored prompt row into chosen/rejected preference pairs, and curate them.

Pure and deterministic so it can run inside any Ray map and be re-run to reproduce a
dataset (`prefgen rebuild-pairs` re-runs it over `responses/` with new rules). Strategies
follow the source papers (docs/research.md "Pair construction and curation"):

* ``best_vs_worst``: highest vs lowest ``overall``.
* ``best_vs_random``: UltraFeedback/Zephyr binarisation; best vs a random strictly worse one.
* ``random_with_margin``: COIG-P; random pairs kept when the score gap exceeds the margin
  (default 2.0 on the 1-10 scale), at most ``max_pairs_per_prompt`` (default 6).
* ``all_pairs``: every strictly ordered pair, largest margins first.

Curation (docs/research.md "Pair construction and curation"), each a filter on candidate pairs before selection:
``min_margin``, ``min_chosen_score``, ``max_length_ratio`` (length bias, see "Judge biases and their controls") and
``min_judge_agreement`` (SCIR / Secrets of RLHF II). The reward-model filter runs later, in
`prefgen.pairing.reward_filter`; `passes_rm_agreement` is its predicate for re-curation. Per-domain
quotas are a cap across prompts, so they cannot run here, where one prompt is seen at a
time: `prefgen.curation.rebuild.apply_domain_quotas` applies them over the whole table.

Every pair carries ``strength`` (HelpSteer3-style, `preference_strength`), the per-judge
``chosen_scores``/``rejected_scores`` (reward-augmented training), ``judge_agreement``,
``routing_score`` (Hybrid Preferences, `routing_score`) and ``label_source``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from typing import Any

from prefgen.data.rows import is_ok
from prefgen.judges.route import BY_REWARD
from prefgen.judges.route import SCORE_NAME as REWARD_SCORE

__all__ = [
    "NO_PAIR_REASONS",
    "STRATEGIES",
    "build_pairs",
    "output_pair",
    "pair_rows",
    "judge_votes",
    "length_ratio",
    "passes_rm_agreement",
    "preference_strength",
    "routing_score",
]

STRATEGIES: tuple[str, ...] = ("best_vs_worst", "best_vs_random", "random_with_margin", "all_pairs")

# Why a prompt produced no pairs, checked in this order (the first filter that leaves no
# candidate is reported):
# - fewer_than_two_scored_responses: < 2 responses have a non-None overall and non-empty text.
# - all_tied: every scorable response has the same overall score.
# - margin_below_threshold: no candidate pair's gap exceeds min_margin.
# - chosen_below_min_score: pairs cleared the margin but every chosen score < min_chosen_score.
# - length_ratio_above_max: every remaining pair's longer/shorter length > max_length_ratio.
# - judges_disagree: every remaining pair has judge agreement < min_judge_agreement.
NO_PAIR_REASONS: tuple[str, ...] = (
    "fewer_than_two_scored_responses",
    "all_tied",
    "margin_below_threshold",
    "chosen_below_min_score",
    "length_ratio_above_max",
    "judges_disagree",
)

# Default margins per strategy: COIG-P found 2.0 best on 1-10; the others only need strict
# order, which min_margin=0.0 with a strict ">" gives.
_DEFAULT_MARGIN = {"random_with_margin": 2.0}
_DEFAULT_CAP = {"random_with_margin": 6}

# |margin| on the 1-10 overall scale -> HelpSteer3 magnitude. COIG-P's rubric bands are two
# points wide, so one band apart reads as "slightly better", two as "better", more as "much".
STRENGTH_EDGES: tuple[float, float] = (2.0, 4.0)
# A margin at or above this (the "much better" bin) no longer calls for a human on its own.
ROUTING_MARGIN_SCALE = 4.0


# --- curation measures (pure) ---------------------------------------------------------------


def length_ratio(a: str, b: str) -> float:
    """Longer over shorter length in characters (tokenizer-independent; both tables have text)."""
    la, lb = len(a), len(b)
    short = min(la, lb)
    return math.inf if short == 0 else max(la, lb) / short


def _judge_of(score_name: str) -> str:
    # Multi-aspect rubrics score as NAME.aspect (config.judge_score_names): one judge, one vote.
    return score_name.split(".", 1)[0]


def _per_judge(scores: dict[str, Any] | None) -> dict[str, float]:
    grouped: dict[str, list[float]] = {}
    for name, value in (scores or {}).items():
        if value is None or isinstance(value, bool):
            continue
        value = float(value)
        if math.isfinite(value):
            grouped.setdefault(_judge_of(name), []).append(value)
    return {judge: sum(v) / len(v) for judge, v in grouped.items()}


def judge_votes(
    chosen_scores: dict[str, Any] | None,
    rejected_scores: dict[str, Any] | None,
    exclude: tuple[str, ...] = (),
) -> tuple[float | None, int]:
    """(share of judges preferring chosen, number of judges that scored both).

    Each judge (verifiers included) votes once, from the mean of its aspects; a tie counts as
    half a vote, as in a win rate. Comparing within one judge makes the judges' different
    native scales irrelevant. `exclude` names scores that aggregate other judges (an
    ensemble's score), which would otherwise vote twice. None when no judge scored both.
    """
    c, r = _per_judge(chosen_scores), _per_judge(rejected_scores)
    shared = sorted((set(c) & set(r)) - set(exclude))
    if not shared:
        return None, 0
    votes = sum(1.0 if c[j] > r[j] else 0.5 if c[j] == r[j] else 0.0 for j in shared)
    return votes / len(shared), len(shared)


def preference_strength(margin: float) -> int:
    """Signed HelpSteer3-style strength in -3..+3 from a margin on the 1-10 scale.

    HelpSteer3-Preference grades -3 "response 1 much better" .. +3 "response 2 much better";
    with response 1 = rejected and response 2 = chosen, positive means chosen is better, so a
    judge-labelled pair is always >= 1 and only a human label can make it 0 or negative.
    """
    if margin == 0 or not math.isfinite(margin):
        return 0
    size = abs(margin)
    magnitude = 1 if size <= STRENGTH_EDGES[0] else 2 if size <= STRENGTH_EDGES[1] else 3
    return magnitude if margin > 0 else -magnitude


def routing_score(
    margin: float, judge_agreement: float | None, n_judges: int, rm_margin: float | None = None
) -> float:
    """How much a pair needs a human, in [0, 1] (a heuristic stand-in for Hybrid Preferences'
    performance-prediction router, which sends the instances an LM judge gets wrong to humans).

    Three signals, each in [0, 1]:
      disagreement = min(1, 2 * (1 - judge_agreement)) with >= 2 judges, else 0 (an even
                     split is 1);
      closeness    = max(0, 1 - margin / ROUTING_MARGIN_SCALE) (ties are 1, "much better" 0);
      rm_doubt     = min(1, 2 * (1 - sigmoid(rm_margin))) when a reward model scored the pair
                     (1 when it is unsure or prefers rejected), else 0.
    Combined as a noisy-OR, 1 - prod(1 - s): any one strong signal routes the pair, and
    several moderate ones add up.
    """
    disagreement = 0.0
    if judge_agreement is not None and n_judges >= 2:
        disagreement = min(1.0, 2.0 * (1.0 - judge_agreement))
    closeness = max(0.0, 1.0 - abs(margin) / ROUTING_MARGIN_SCALE)
    rm_doubt = 0.0
    if rm_margin is not None and math.isfinite(rm_margin):
        rm_doubt = min(1.0, 2.0 * (1.0 - 1.0 / (1.0 + math.exp(-max(-50.0, rm_margin)))))
    keep = (1.0 - disagreement) * (1.0 - closeness) * (1.0 - rm_doubt)
    return round(min(1.0, max(0.0, 1.0 - keep)), 6)


def passes_rm_agreement(rm_margin: float | None, min_rm_margin: float = 0.0) -> bool:
    """Reward-model agreement (COIG-P's CRM filter): keep iff rm_margin > min_rm_margin.

    A pair the reward model never scored (None) passes: there is no verdict to disagree with.
    Same rule as `prefgen.pairing.reward_filter.filter_decision`, for re-curation of stored pairs.
    """
    return rm_margin is None or rm_margin > max(min_rm_margin, 0.0)


# --- pair construction ------------------------------------------------------------------------


def _sample_key(sample: Any) -> tuple[int, Any]:
    # Sort ints numerically and anything else (None, str) after them, without type errors.
    return (
        (0, sample)
        if isinstance(sample, int) and not isinstance(sample, bool)
        else (1, str(sample))
    )


def _scorable(responses: list[dict]) -> list[dict]:
    """Responses that may appear in a pair, in a canonical order independent of input order."""
    keep = []
    for idx, r in enumerate(responses or []):
        score = r.get("overall")
        text = r.get("text")
        if (
            score is None
            or isinstance(score, bool)
            or not isinstance(text, str)
            or not text.strip()
        ):
            continue
        try:
            score = float(score)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(score):
            continue
        keep.append((str(r.get("model")), _sample_key(r.get("sample")), idx, score, r))
    keep.sort(key=lambda t: t[:3])
    return [{**t[4], "overall": t[3]} for t in keep]


def _rng(seed: int, prompt_id: str) -> random.Random:
    # hash() is salted per process; sha256 keeps runs reproducible across workers.
    digest = hashlib.sha256(json.dumps([seed, prompt_id]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _pair_id(prompt_id: str, chosen: dict, rejected: dict) -> str:
    key = [
        prompt_id,
        chosen.get("model"),
        chosen.get("sample"),
        rejected.get("model"),
        rejected.get("sample"),
    ]
    return hashlib.sha256(json.dumps(key, default=str).encode("utf-8")).hexdigest()[:16]


def _orient(a: dict, b: dict) -> tuple[dict, dict]:
    return (a, b) if a["overall"] >= b["overall"] else (b, a)


def _make_pair(
    row: dict, chosen: dict, rejected: dict, strategy: str, judge: str, exclude: tuple[str, ...]
) -> dict:
    """One pair as it travels in a row (`prefgen.data.schema.PAIR`); `output_pair` adds the
    prompt and assembles `meta` for the pairs table."""
    prompt_id = str(row.get("id", ""))
    c_score, r_score = float(chosen["overall"]), float(rejected["overall"])
    c_scores, r_scores = dict(chosen.get("scores") or {}), dict(rejected.get("scores") or {})
    agreement, n_judges = judge_votes(c_scores, r_scores, exclude)
    return {
        "id": _pair_id(prompt_id, chosen, rejected),
        "prompt_id": prompt_id,
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "chosen_score": c_score,
        "rejected_score": r_score,
        "margin": c_score - r_score,
        "chosen_model": chosen.get("model"),
        "rejected_model": rejected.get("model"),
        "domain": row.get("domain"),
        "judge": judge,
        "strategy": strategy,
        "chosen_sample": chosen.get("sample"),
        "rejected_sample": rejected.get("sample"),
        "chosen_system_prompt": chosen.get("system_prompt"),
        "rejected_system_prompt": rejected.get("system_prompt"),
        "chosen_scores": c_scores,
        "rejected_scores": r_scores,
        "strength": preference_strength(c_score - r_score),
        "judge_agreement": agreement,
        "routing_score": routing_score(c_score - r_score, agreement, n_judges),
        "label_source": "judge",
        "rm_margin": None,
    }


# Pair fields that the pairs table keeps inside `meta` (with the prompt's own meta).
_META_FIELDS = (
    "chosen_sample",
    "rejected_sample",
    "chosen_system_prompt",
    "rejected_system_prompt",
    "chosen_scores",
    "rejected_scores",
)


def output_pair(pair: dict, prompt: list[dict], prompt_meta: dict) -> dict:
    """An in-flight pair -> its pairs-table record: the prompt messages added, samples, system
    prompts and per-judge scores in `meta` next to the prompt's meta (a dict; writers encode it).
    The score dicts stay top-level too (reward-augmented training reads them there)."""
    record = {k: v for k, v in pair.items() if k not in _META_FIELDS[:4]}
    record["prompt"] = prompt
    meta = {k: pair.get(k) for k in _META_FIELDS}
    meta["chosen_scores"] = dict(meta["chosen_scores"] or {})
    meta["rejected_scores"] = dict(meta["rejected_scores"] or {})
    meta["prompt_meta"] = dict(prompt_meta or {})
    record["meta"] = meta
    return record


def _candidates(strategy: str, scored: list[dict]) -> list[tuple[dict, dict]]:
    """Every (chosen, rejected) the strategy may pick from, before any filter."""
    if strategy == "best_vs_worst":
        # max/min over the canonical order give a deterministic pick among equal scores.
        best = max(scored, key=lambda r: r["overall"])
        return [(best, min(scored, key=lambda r: r["overall"]))]
    if strategy == "best_vs_random":
        best = max(scored, key=lambda r: r["overall"])
        return [(best, r) for r in scored if r is not best]
    return [
        _orient(scored[i], scored[j]) for i in range(len(scored)) for j in range(i + 1, len(scored))
    ]


def build_pairs(
    row: dict,
    strategy: str,
    *,
    min_margin: float | None = None,
    min_chosen_score: float | None = None,
    max_pairs_per_prompt: int | None = None,
    max_length_ratio: float | None = None,
    min_judge_agreement: float | None = None,
    seed: int = 0,
    judge: str = "",
    exclude_from_votes: tuple[str, ...] = (),
) -> tuple[list[dict], str | None]:
    """Build preference pairs for one prompt row.

    Returns ``(pairs, None)`` when at least one pair is produced, else ``([], reason)`` with
    ``reason`` from ``NO_PAIR_REASONS`` so dropped prompts can be counted and explained.
    A pair is kept iff ``chosen_score - rejected_score > margin`` (strict, and never <= 0, so
    ties never pair), ``chosen_score >= min_chosen_score``, ``length_ratio <=
    max_length_ratio`` and ``judge_agreement >= min_judge_agreement`` (a pair no two judges
    scored has no agreement and passes), each when set. Filters run before the random draw
    and the cap, so a valid pair is never lost to an unlucky draw.
    `exclude_from_votes`: aggregate score names (an ensemble's) left out of judge votes.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    cap = max_pairs_per_prompt if max_pairs_per_prompt is not None else _DEFAULT_CAP.get(strategy)
    if cap is not None and cap < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1 or None, got {max_pairs_per_prompt!r}")
    if max_length_ratio is not None and not max_length_ratio >= 1:
        raise ValueError(f"max_length_ratio must be >= 1 or None, got {max_length_ratio!r}")
    if min_judge_agreement is not None and not 0 <= min_judge_agreement <= 1:
        raise ValueError(f"min_judge_agreement must be in [0, 1], got {min_judge_agreement!r}")
    margin = _DEFAULT_MARGIN.get(strategy, 0.0) if min_margin is None else float(min_margin)
    # A negative margin must not let ties through: pairs need a strict preference.
    margin = max(margin, 0.0)

    scored = _scorable(row.get("responses") or [])
    if len(scored) < 2:
        return [], "fewer_than_two_scored_responses"
    if len({r["overall"] for r in scored}) == 1:
        return [], "all_tied"

    def agreement_ok(c: dict, r: dict) -> bool:
        share, _ = judge_votes(c.get("scores"), r.get("scores"), exclude_from_votes)
        return share is None or share >= min_judge_agreement

    filters: list[tuple[str, Callable[[dict, dict], bool] | None]] = [
        ("margin_below_threshold", lambda c, r: c["overall"] - r["overall"] > margin),
        (
            "chosen_below_min_score",
            None if min_chosen_score is None else lambda c, r: c["overall"] >= min_chosen_score,
        ),
        (
            "length_ratio_above_max",
            None
            if max_length_ratio is None
            else lambda c, r: length_ratio(c["text"], r["text"]) <= max_length_ratio,
        ),
        ("judges_disagree", None if min_judge_agreement is None else agreement_ok),
    ]
    candidates = _candidates(strategy, scored)
    for reason, keep in filters:
        if keep is not None:
            candidates = [(c, r) for c, r in candidates if keep(c, r)]
        if not candidates:
            return [], reason

    rng = _rng(seed, str(row.get("id", "")))
    if strategy == "best_vs_random":
        selected = [rng.choice(candidates)]
    elif strategy == "random_with_margin":
        # Shuffling unordered pairs == COIG-P's repeated random draws without duplicates.
        rng.shuffle(candidates)
        selected = candidates if cap is None else candidates[:cap]
    else:
        if strategy == "all_pairs":
            candidates.sort(
                key=lambda p: (-(p[0]["overall"] - p[1]["overall"]), _pair_id("", p[0], p[1]))
            )
        selected = candidates if cap is None else candidates[:cap]

    pairs: dict[str, dict] = {}
    for chosen, rejected in selected:
        pair = _make_pair(row, chosen, rejected, strategy, judge, tuple(exclude_from_votes))
        # Duplicate (model, sample) keys in a row would collide on id; keep the first.
        pairs.setdefault(pair["id"], pair)
    return sorted(pairs.values(), key=lambda p: (-p["margin"], p["id"])), None


def pair_rows(
    rows: list[dict],
    strategy: str,
    *,
    min_margin,
    min_chosen_score,
    max_pairs_per_prompt,
    seed: int,
    judge: str,
    max_length_ratio: float | None = None,
    min_judge_agreement: float | None = None,
    exclude_from_votes: tuple[str, ...] = (),
) -> list[dict]:
    """Row stage: each ok row gains `pairs`; a row with none records its no-pair reason.

    A prompt the reward model settled (`prefgen.judges.route`) is paired on its rewards: the
    judges' 1-10 thresholds (`min_margin`, `min_chosen_score`) do not apply to them, the
    strategy's own margin does. Wherever both sides carry a reward, the pair's `rm_margin` is
    their reward gap (the reward never counts as a judge vote)."""
    exclude = (*exclude_from_votes, REWARD_SCORE)
    for row in rows:
        if not is_ok(row):
            continue
        settled = row.get("route") == BY_REWARD
        pairs, reason = build_pairs(
            row,
            strategy,
            min_margin=None if settled else min_margin,
            min_chosen_score=None if settled else min_chosen_score,
            max_pairs_per_prompt=max_pairs_per_prompt,
            max_length_ratio=max_length_ratio,
            min_judge_agreement=min_judge_agreement,
            seed=seed,
            judge=REWARD_SCORE if settled else judge,
            exclude_from_votes=exclude,
        )
        for pair in pairs:
            c, r = (
                pair["chosen_scores"].get(REWARD_SCORE),
                pair["rejected_scores"].get(REWARD_SCORE),
            )
            if c is not None and r is not None:
                pair["rm_margin"] = c - r
            if settled:
                pair["label_source"] = BY_REWARD
        row["pairs"] = pairs
        row["reason"] = None if pairs else reason
    return rows
