"""Run directories, phase markers and atomic writes.

A run lives in ``<run_dir>/<name>/``; each phase writes into ``<run_dir>/<name>/<phase>/``. A phase works in
``<phase>.partial/`` and is committed by renaming that folder once its marker (``_phase.json``, holding the hash of the
config that produced it) has been written, so a phase folder either holds a complete, marked result or does not
exist. A rerun skips a phase whose marker matches the current hash and redoes one whose inputs changed; a phase that
was interrupted resumes from what its ``.partial`` folder holds if the hash still matches (training checkpoints), and
starts clean otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "_phase.json"
PARTIAL_HASH = "_config_hash"


def stable_hash(obj: Any) -> str:
    """SHA-256 (hex, first 16 chars) of the canonical JSON form of ``obj``; paths and sets are normalised."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (UTF-8, indented, non-ASCII kept) atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    return atomic_write_text(path, text)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    If the block raises, the temporary folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``, replacing ``dst`` if it exists (the old one is moved aside first)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


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

    def invalidate(self, phase: str) -> None:
        """Forget a phase's result (used when an upstream phase was redone)."""
        for folder in (self.path(phase), self.root / f"{phase}.partial"):
            if folder.exists():
                shutil.rmtree(folder)
