"""Pairs with a real, learnable signal: the chosen reply is about the topic asked for.

The rejected reply has the same shape but is about another topic, so a reward model has to
relate the response to the prompt; held-out prompts are about topics unseen in training.
Imported by the tests as `reward.topic_pairs` (tests/ is on the path).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.data.schema import PAIR_SCHEMA

TOPICS = (
    "cats dogs paris tokyo pizza sushi guitars pianos soccer tennis volcanoes glaciers rain snow "
    "bread cheese rockets satellites bees ants rivers deserts coffee tea chess poetry trains "
    "bicycles sharks whales apples oranges mountains oceans lions eagles copper gold forests "
    "castles"
).split()
QUESTIONS = (
    "Tell me about {t}.",
    "What do you know about {t}?",
    "Can you describe {t}?",
    "Give me a fact about {t}.",
    "Explain {t} briefly.",
)
ANSWERS = (
    "{T} are a fascinating subject, and {t} have a long history.",
    "Here is a fact about {t}: many people study {t} closely.",
    "{T} are well known; people often talk about {t}.",
    "When it comes to {t}, there is a lot to say.",
)


def topic_pair_rows(seed: int = 0, topics=TOPICS) -> list[dict]:
    """prefgen `pairs/` rows (PAIR_SCHEMA), one per (topic, question)."""
    rng = random.Random(seed)
    rows = []
    for t in topics:
        for qi, question in enumerate(QUESTIONS):
            other = rng.choice([o for o in TOPICS if o != t])
            good = rng.choice(ANSWERS).format(t=t, T=t.capitalize())
            bad = rng.choice(ANSWERS).format(t=other, T=other.capitalize())
            chosen_score, rejected_score = 8.0 + rng.random(), 2.0 + rng.random()
            rows.append(
                {
                    "id": f"{t}-{qi}",
                    "prompt_id": t,  # one group per topic: held-out topics are unseen
                    "prompt": [{"role": "user", "content": question.format(t=t)}],
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                    "chosen_score": chosen_score,
                    "rejected_score": rejected_score,
                    "margin": chosen_score - rejected_score,
                    "chosen_model": "a",
                    "rejected_model": "b",
                    "domain": "animals" if t in ("cats", "dogs", "lions", "eagles") else "general",
                    "judge": "test",
                    "strategy": "best_vs_worst",
                    "meta": json.dumps(
                        {
                            "chosen_scores": {"judge.relevance": chosen_score},
                            "rejected_scores": {"judge.relevance": rejected_score},
                        }
                    ),
                }
            )
    rng.shuffle(rows)
    return rows


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), path)
    return path
