"""Content digests of a run's inputs (corpus files, benchmark data, local models), so that phase hashes follow what
the files hold, not only their names.

A file is digested with xxh3-128 over all of its bytes. Digests are cached in the run directory
(``.input-digests.json``) under the file's device, inode, size, modification *and* change time: a copy of a file
(``cp -p`` keeps the modification time, never the change time or the inode) or an edit in place is digested again,
an untouched file is not. A folder's digest covers every file below it (relative names and digests). What cannot be
read locally is named instead: a Hub model by id and revision, a Hub dataset by id and split.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Any

import xxhash

from redwhale.config.schema import CorpusInput
from redwhale.core.io import atomic_write_json
from redwhale.core.source import ALIASES, alias_file
from redwhale.corpus.bundled import konlpy_corpus_dir

CACHE_FILE = ".input-digests.json"
CHUNK = 1 << 22


class Digests:
    """Digests of input files, cached in ``cache`` (a JSON file) across runs."""

    def __init__(self, cache: Path | None = None):
        self.cache = cache
        self._known: dict[str, str] = {}
        if cache is not None and cache.is_file():
            try:
                self._known = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._known = {}
        self._dirty = False

    def save(self) -> None:
        if self.cache is not None and self._dirty:
            atomic_write_json(self.cache, self._known, fsync=False)
            self._dirty = False

    # ---------------------------------------------------------------------------------------------------- files
    def file(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        if key not in self._known:
            digest = xxhash.xxh3_128()
            with open(path, "rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
            self._known[key] = digest.hexdigest()
            self._dirty = True
        return self._known[key]

    def folder(self, path: Path) -> str:
        digest = xxhash.xxh3_128()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path)}\0{self.file(item)}\0".encode())
        return digest.hexdigest()

    def path(self, path: Path) -> str:
        if path.is_file():
            return "file:" + self.file(path)
        if path.is_dir():
            return "folder:" + self.folder(path)
        return f"missing:{path}"

    # -------------------------------------------------------------------------------------------------- values
    def corpus_input(self, spec: CorpusInput) -> str:
        if spec.path == "bundled:konlpy":
            return "konlpy:" + self.folder(konlpy_corpus_dir())
        if spec.path.startswith("bundled:"):
            return f"{spec.path}:python-{sys.version_info.major}.{sys.version_info.minor}"
        if spec.format == "hf":
            return f"hf:{spec.path}:{spec.split}"  # a remote dataset: named, not read
        path = Path(spec.path).expanduser()
        if path.exists():
            return self.path(path)
        matches = sorted(glob.glob(spec.path, recursive=True)) if glob.has_magic(spec.path) else []
        digest = xxhash.xxh3_128()
        for name in matches:
            digest.update(f"{name}\0{self.path(Path(name))}\0".encode())
        return f"glob:{digest.hexdigest()}" if matches else f"missing:{spec.path}"

    def model(self, spec: str, revision: str | None = None) -> str:
        if spec in ALIASES:
            return "alias:" + self.file(alias_file(spec))
        path = Path(spec).expanduser()
        if path.exists():
            return self.path(path)
        return f"hub:{spec}@{revision or 'main'}"

    def value(self, value: Any, revision: str | None = None) -> str:
        """The digest of one input field's value."""
        if isinstance(value, CorpusInput):
            return self.corpus_input(value)
        if isinstance(value, Path):
            return self.path(value.expanduser())
        if isinstance(value, str):
            return self.model(value, revision)
        raise TypeError(f"cannot digest an input of type {type(value).__name__}")
