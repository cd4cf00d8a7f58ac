"""Exact dedup's compact state: the first owner of a key, across bulk merges."""

from __future__ import annotations

import random

from prefgen.ingest import first_seen
from prefgen.ingest.first_seen import FirstSeen


def test_first_owner_wins_across_merges(monkeypatch):
    monkeypatch.setattr(first_seen, "_MERGE_AT", 7)  # many merges on a small input
    rng = random.Random(0)
    keys = [rng.getrandbits(64) for _ in range(300)]  # half of them above 2**63
    keys += rng.choices(keys, k=300)  # and repeats, near and far
    seen, expected = FirstSeen(), {}
    for owner, key in enumerate(keys):
        assert seen.claim(key, owner) == expected.setdefault(key, owner)
    assert len(seen) == len(expected)
