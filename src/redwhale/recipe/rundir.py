"""Run directories and phase markers.

A run lives in ``<run_dir>/<name>/``; each phase writes into ``<run_dir>/<name>/<phase>/``. A phase works in
``<phase>.partial/`` and is committed by renaming that folder once its marker (``_phase.json``, holding the hash of the
inputs that produced it) has been written, so a phase folder either holds a complete, marked result or does not
exist. A rerun skips a phase whose marker matches the current hash and redoes one whose inputs changed; a phase that
was interrupted resumes from what its ``.partial`` folder holds if the hash still matches (training checkpoints, the
corpus pipeline's finished tasks), and starts clean otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redwhale.core.io import atomic_write_json, atomic_write_text, replace_dir

MARKER = "_phase.json"
PARTIAL_HASH = "_config_hash"


@dataclass(frozen=True)
class PhaseMarker:
    """What a finished phase left behind: the hash of the config that produced it, and a summary of its outputs."""

    phase: str
    config_hash: str
    finished_at: float
    summary: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> PhaseMarker | None:
        path = folder / MARKER
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["phase"], data["config_hash"], float(data["finished_at"]), dict(data.get("summary", {})))
        except (OSError, ValueError, KeyError, TypeError):
            return None


class RunDir:
    """The folder of one run: ``<root>/<phase>/`` per finished phase, ``<root>/<phase>.partial/`` while one works."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, phase: str) -> Path:
        """Where a finished phase's outputs live."""
        return self.root / phase

    def marker(self, phase: str) -> PhaseMarker | None:
        """The marker of a finished phase, or None if the phase has not finished."""
        return PhaseMarker.read(self.path(phase))

    def is_done(self, phase: str, config_hash: str) -> bool:
        """True if the phase finished with exactly this config hash (its outputs are up to date)."""
        marker = self.marker(phase)
        return marker is not None and marker.config_hash == config_hash

    def partial(self, phase: str, config_hash: str) -> Path:
        """The working folder of a phase. Kept across interruptions while the config hash is unchanged (so that
        resumable work such as training continues), wiped and recreated when the hash differs."""
        work = self.root / f"{phase}.partial"
        stamp = work / PARTIAL_HASH
        if work.exists() and (not stamp.is_file() or stamp.read_text().strip() != config_hash):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            atomic_write_text(stamp, config_hash + "\n")
        return work

    def commit(self, phase: str, config_hash: str, summary: dict[str, Any] | None = None) -> Path:
        """Write the marker into the phase's working folder and rename it into place, replacing an older result."""
        work = self.root / f"{phase}.partial"
        if not work.is_dir():
            raise FileNotFoundError(f"phase {phase!r} has no working folder to commit: {work}")
        (work / PARTIAL_HASH).unlink(missing_ok=True)
        marker = {"phase": phase, "config_hash": config_hash, "finished_at": time.time(), "summary": summary or {}}
        atomic_write_json(work / MARKER, marker)
        final = self.path(phase)
        replace_dir(work, final)
        return final
