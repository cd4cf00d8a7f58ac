"""Which input position first claimed a key: exact dedup in 16 bytes a key.

Ingest streams, so the only state that grows with the input is what dedup must remember: one
64-bit key per kept prompt (its normalized text's hash, its id's hash) and the position that
claimed it. A dict of strings costs ~200 bytes a key (a million prompts: ~400 MB on the
driver); here keys and owners sit in two sorted numpy arrays (16 bytes a key), and recent keys
wait in a small dict that is merged into the arrays in bulk.
"""

from __future__ import annotations

import numpy as np

_MERGE_AT = 1 << 16  # recent keys held as a dict before a bulk merge


class FirstSeen:
    """`claim(key, owner)` -> the first owner ever given for `key` (`owner` itself when new)."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._owners = np.empty(0, dtype=np.int64)
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def claim(self, key: int, owner: int) -> int:
        found = self._recent.get(key)
        if found is not None:
            return found
        if len(self._keys):
            i = int(np.searchsorted(self._keys, np.uint64(key)))
            if i < len(self._keys) and int(self._keys[i]) == key:
                return int(self._owners[i])
        self._recent[key] = owner
        if len(self._recent) >= _MERGE_AT:
            self._merge()
        return owner

    def _merge(self) -> None:
        count = len(self._recent)
        keys = np.concatenate(
            [self._keys, np.fromiter(self._recent.keys(), dtype=np.uint64, count=count)]
        )
        owners = np.concatenate(
            [self._owners, np.fromiter(self._recent.values(), dtype=np.int64, count=count)]
        )
        order = np.argsort(keys, kind="stable")
        self._keys, self._owners = keys[order], owners[order]
        self._recent = {}
