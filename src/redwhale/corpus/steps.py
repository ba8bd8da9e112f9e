"""Small datatrove steps of the corpus pipeline that are not filters: the train / held-out tag and a tally that counts
documents as they pass (for the progress display and the early stop when nothing survives the filters).

Kept free of torch: datatrove's worker processes import the module of every step they run."""

from __future__ import annotations

import time
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from redwhale.core.io import atomic_write_json
from redwhale.core.text import split_of


class TagSplit(PipelineStep):
    """Tags each document ``train`` or ``heldout`` by a hash of its text (see :mod:`redwhale.core.text`)."""

    type = "🔀 - SPLIT"
    name = "🔀 train / held-out"

    def __init__(self, seed: int, fraction: float):
        super().__init__()
        self.seed, self.fraction = seed, fraction

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for document in data:
            split = split_of(document.text, self.seed, self.fraction)
            document.metadata["split"] = split
            self.stat_update(split)
            yield document


class Tally(PipelineStep):
    """Counts the documents that pass (stat ``tally_<key>``) and writes the count of this task to
    ``<folder>/<rank>.<key>.json`` every ``every_s`` seconds and at the end, for the parent's progress display."""

    type = "📊 - TALLY"
    name = "📊 tally"

    def __init__(self, key: str, folder: str | Path, every_s: float = 2.0):
        super().__init__()
        self.key, self.folder, self.every_s = key, Path(folder), every_s

    def _write(self, rank: int, count: int, done: bool) -> None:
        atomic_write_json(self.folder / f"{rank:05d}.{self.key}.json", {"count": count, "done": done}, fsync=False)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        count, last = 0, time.monotonic()
        for document in data:
            count += 1
            self.stat_update(f"tally_{self.key}")
            if time.monotonic() - last >= self.every_s:
                self._write(rank, count, False)
                last = time.monotonic()
            yield document
        self._write(rank, count, True)
