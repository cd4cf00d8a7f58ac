"""Training checkpoints on any fsspec URL, committed by a pointer written last.

    <output>/train/checkpoint_0000012/model/   the reward model (save_reward_model layout)
    <output>/train/checkpoint_0000012/state.pt step, scheduler, history, identity (+ optimizer
                                               while the run is unfinished)
    <output>/train/latest.json                 {"name", "step", "metrics"}: the commit point

A checkpoint exists once `latest.json` names it: a kill while its files upload leaves the
previous pointer, so a re-run resumes from the last whole checkpoint. After the pointer moves,
the `keep` newest checkpoints up to it stay; older ones, and any past it (left by a run killed
before its commit), are removed. The same store serves a training run in this
process and one on Ray Train workers (rank 0 writes), so a run resumes whichever way it ran.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefgen.data import storage

LATEST = "latest.json"
_NAME = re.compile(r"checkpoint_(\d+)")


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:07d}"


class CheckpointStore:
    def __init__(self, url: str, storage_options: dict | None = None, keep: int = 2):
        self.url, self.options, self.keep = url, storage_options or {}, keep
        self.fs, self.root = storage.filesystem(url, self.options)

    def latest(self) -> dict[str, Any] | None:
        """The committed pointer: {"name", "step", "metrics"}, or None before the first."""
        path = storage.join(self.root, LATEST)
        return storage.read_json(self.fs, path) if self.fs.exists(path) else None

    def save(self, step: int, write: Callable[[Path], None], metrics: dict[str, Any]) -> None:
        """`write(directory)` fills a local directory; it is uploaded, then committed."""
        name = checkpoint_name(step)
        with tempfile.TemporaryDirectory() as staging:
            write(Path(staging))
            target = storage.join(self.root, name)
            storage.remove_tree(self.fs, target)  # a half-uploaded copy from a killed run
            storage.put_tree(Path(staging), self.fs, target)
        pointer = {"name": name, "step": step, "metrics": metrics}
        storage.write_json_atomic(self.fs, storage.join(self.root, LATEST), pointer)
        self._prune(step)

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[Path]:
        """A checkpoint's files in a local directory (object stores: a temporary copy)."""
        source = storage.join(self.root, name)
        if storage.is_local(self.fs):
            yield Path(source)
            return
        with tempfile.TemporaryDirectory() as staging:
            self.fs.get(source.rstrip("/") + "/", staging, recursive=True)
            yield Path(staging)

    def clear(self) -> None:
        storage.remove_tree(self.fs, self.root)

    def _prune(self, committed: int) -> None:
        steps = []
        for path in self.fs.ls(self.root, detail=False):
            match = _NAME.fullmatch(path.rstrip("/").rsplit("/", 1)[-1])
            if match:
                steps.append(int(match.group(1)))
        kept = sorted(s for s in steps if s <= committed)[-max(self.keep, 1) :]
        for step in steps:
            if step not in kept:
                storage.remove_tree(self.fs, storage.join(self.root, checkpoint_name(step)))
