"""Streaming readers for raw text: JSONL (optionally compressed), Parquet, plain text, Hugging Face datasets.

They are datatrove readers, so the same objects run inside a datatrove pipeline (local, Slurm or Ray executor) and can
be iterated directly (tokenizer training). Two things datatrove's stock readers do not do are added here:

* :class:`CountingJsonlReader` counts every malformed line by reason (invalid UTF-8, invalid JSON, not an object,
  no text field) instead of logging it once, and never stops reading a file at a bad byte (the stock reader abandons
  the rest of a file on a ``UnicodeDecodeError``);
* :class:`TextReader` reads plain text as one document per file, per blank-line-separated paragraph, or per line.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
import pyarrow.parquet as pq
from datatrove.data import Document
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from redwhale.config.schema import CorpusInput
from redwhale.core.errors import DataError
from redwhale.corpus.bundled import konlpy_corpus_dir, python_docs_english

log = logging.getLogger(__name__)

TextUnit = Literal["file", "paragraph", "line"]
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".txt.gz", ".text")
MAX_EXAMPLES = 5


@dataclass
class ReadReport:
    """What reading produced: documents, and malformed input counted by reason with a few examples."""

    documents: int = 0
    malformed: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def record(self, reason: str, where: str) -> None:
        self.malformed[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def summary(self) -> dict:
        return {"documents": self.documents, "malformed": dict(self.malformed), "examples": list(self.examples)}

    def log(self) -> None:
        if self.malformed_total:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.malformed.most_common())
            log.warning(
                "skipped %d malformed input lines (%s); first: %s",
                self.malformed_total,
                reasons,
                "; ".join(self.examples[:3]),
            )


def detect_format(path: str) -> str:
    """The reader format for a file, folder or glob, from file extensions."""
    candidates = [path] if Path(path).is_file() else _expand(path)
    for name in candidates:
        lower = name.lower()
        if lower.endswith(JSONL_SUFFIXES):
            return "jsonl"
        if lower.endswith(PARQUET_SUFFIXES):
            return "parquet"
        if lower.endswith(TEXT_SUFFIXES):
            return "text"
    raise DataError(f"cannot tell the format of {path} from its extension: set format to jsonl, parquet or text")


def _expand(path: str) -> list[str]:
    if Path(path).is_dir():
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    if glob.has_magic(path):
        return sorted(glob.glob(path, recursive=True))
    return []


def _folder_and_pattern(path: str, suffixes: tuple[str, ...]) -> tuple[str, str | None]:
    """Split an input path into the datatrove (data_folder, glob_pattern) pair; a folder reads the files in it whose
    names end with one of ``suffixes``."""
    p = Path(path)
    if p.is_file():
        return str(p.parent), p.name
    if p.is_dir():
        names = {f.name for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes)}
        exts = sorted({n[n.index(".") :] for n in names if "." in n})
        return str(p), ("**/*" + exts[0]) if len(exts) == 1 else "**/*"
    if glob.has_magic(path):
        parts = p.parts
        first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        return str(Path(*parts[:first])) if first else ".", str(Path(*parts[first:]))
    raise DataError(f"corpus input not found: {path}")


BUNDLED = ("bundled:konlpy", "bundled:python-docs")


def make_reader(spec: CorpusInput, report: ReadReport | None = None, text_unit: TextUnit = "paragraph"):
    """A datatrove reader for one corpus input. ``bundled:konlpy`` (the Korean text konlpy ships) and
    ``bundled:python-docs`` (the English of CPython's reference) need no download."""
    if spec.path.startswith("bundled:"):
        return _bundled_reader(spec, text_unit)
    if spec.format != "hf" and "://" not in spec.path and not Path(spec.path).exists() and not _expand(spec.path):
        raise DataError(f"corpus input not found: {spec.path}")
    fmt = spec.format if spec.format != "auto" else detect_format(spec.path)
    limit = spec.limit or -1
    if fmt == "hf":
        return HuggingFaceDatasetReader(
            spec.path, dataset_options={"split": spec.split}, streaming=True, limit=limit, text_key=spec.text_field
        )
    if fmt == "parquet":
        folder, pattern = _folder_and_pattern(spec.path, PARQUET_SUFFIXES)
        return ParquetReader(folder, glob_pattern=pattern, limit=limit, text_key=spec.text_field)
    if fmt == "jsonl":
        folder, pattern = _folder_and_pattern(spec.path, JSONL_SUFFIXES)
        reader = CountingJsonlReader(folder, glob_pattern=pattern, limit=limit, text_key=spec.text_field)
    else:
        folder, pattern = _folder_and_pattern(spec.path, TEXT_SUFFIXES)
        reader = TextReader(folder, glob_pattern=pattern, limit=limit, unit=text_unit)
    if report is not None:
        reader.report = report
    return reader


def check_inputs(inputs: Iterable[CorpusInput]) -> None:
    """Each input exists and holds something, checked before any work starts (a one-line error otherwise)."""
    for spec in inputs:
        if spec.path.startswith("bundled:") or "://" in spec.path:
            continue
        if spec.format == "hf":
            _check_hf_dataset(spec)
            continue
        path = Path(spec.path).expanduser()
        files = [str(path)] if path.is_file() else _expand(spec.path)
        if not files:
            raise DataError(f"corpus input not found: {spec.path}")
        if all(Path(f).stat().st_size == 0 for f in files):
            raise DataError(f"corpus input is empty: {spec.path} ({len(files)} file{'s' if len(files) > 1 else ''})")
        fmt = spec.format if spec.format != "auto" else detect_format(spec.path)
        if fmt == "parquet":
            _check_parquet_column(files, spec.text_field)


def _check_parquet_column(files: list[str], column: str) -> None:
    for name in files:
        if not name.lower().endswith(PARQUET_SUFFIXES):
            continue
        names = pq.read_schema(name).names
        if column not in names:
            raise DataError(f"{name} has no column {column!r} (columns: {', '.join(names)}); set text_field")


def _check_hf_dataset(spec: CorpusInput) -> None:
    import datasets  # only for Hugging Face dataset inputs

    try:
        datasets.load_dataset_builder(spec.path)
    except Exception as exc:  # datasets raises many kinds: DatasetNotFoundError, ConnectionError, FileNotFoundError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"cannot open the Hugging Face dataset {spec.path!r} (offline, or no such dataset): {first}"
        ) from None


def iter_documents(
    inputs: Iterable[CorpusInput], report: ReadReport | None = None, text_unit: TextUnit = "paragraph"
) -> Iterator[Document]:
    """Every document of every input, streamed in order; malformed lines are counted in ``report``."""
    report = report if report is not None else ReadReport()
    for spec in inputs:
        reader = make_reader(spec, report, text_unit)
        files = _reader_files(reader)
        if files is not None and not files:
            raise DataError(f"corpus input matches no files: {spec.path}")
        for document in reader.run():
            report.documents += 1
            yield document


def iter_texts(
    inputs: Iterable[CorpusInput], report: ReadReport | None = None, text_unit: TextUnit = "paragraph"
) -> Iterator[str]:
    """The text of every document, streamed."""
    for document in iter_documents(inputs, report, text_unit):
        yield document.text


def _reader_files(reader) -> list[str] | None:
    folder = getattr(reader, "data_folder", None)
    if folder is None or not hasattr(reader, "glob_pattern"):
        return None
    return folder.list_files(recursive=reader.recursive, glob_pattern=reader.glob_pattern)


class CountingJsonlReader(JsonlReader):
    """JSONL reader that counts malformed lines by reason and keeps reading past them."""

    name = "redwhale jsonl"
    report: ReadReport | None = None

    def _bad(self, reason: str, filepath: str, line_number: int) -> None:
        self.stat_update("malformed_lines")
        self.stat_update(f"malformed: {reason}")
        if self.report is not None:
            self.report.record(reason, f"{filepath}:{line_number}")

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb", compression=self.compression) as handle:
            for index, raw in enumerate(handle):
                line_number = index + 1
                with self.track_time():
                    if not raw.strip():
                        continue
                    try:
                        data = orjson.loads(raw)  # orjson rejects invalid UTF-8 with a JSONDecodeError
                    except orjson.JSONDecodeError as exc:
                        reason = "invalid UTF-8" if "utf-8" in str(exc).lower() else "invalid JSON"
                        self._bad(reason, filepath, line_number)
                        continue
                    if not isinstance(data, dict):
                        self._bad("not a JSON object", filepath, line_number)
                        continue
                    text = data.get(self.text_key)
                    if not isinstance(text, str):
                        self._bad(f"no string field {self.text_key!r}", filepath, line_number)
                        continue
                    if not text.strip():
                        self._bad("empty text", filepath, line_number)
                        continue
                    document = self.get_document_from_dict(data, filepath, index)
                if document:
                    yield document


class TextReader(BaseDiskReader):
    """Plain UTF-8 text: one document per file, per paragraph (blank-line separated) or per line."""

    name = "redwhale text"
    report: ReadReport | None = None

    def __init__(self, data_folder, unit: TextUnit = "paragraph", **kwargs):
        super().__init__(data_folder, **kwargs)
        self.unit = unit

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            self.stat_update("malformed_lines")
            if self.report is not None:
                self.report.record("invalid UTF-8 bytes replaced", filepath)
        if self.unit == "file":
            pieces = [text]
        elif self.unit == "line":
            pieces = text.splitlines()
        else:
            pieces = list(_paragraphs(text))
        for index, piece in enumerate(pieces):
            if piece.strip():
                document = self.get_document_from_dict({"text": piece.strip()}, filepath, index)
                if document:
                    yield document


class ListReader(BaseReader):
    """Documents from an in-memory list of texts (bundled English)."""

    name = "redwhale bundled"

    def __init__(self, texts: list[str], limit: int = -1):
        super().__init__(limit=limit)
        self.texts = texts

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        for index in range(rank, len(self.texts), world_size):
            if self.limit != -1 and index >= self.limit:
                break
            document = self.get_document_from_dict({"text": self.texts[index]}, "bundled", index)
            if document:
                self.update_doc_stats(document)
                yield document


def _bundled_reader(spec: CorpusInput, text_unit: TextUnit):
    if spec.path == "bundled:konlpy":
        return TextReader(str(konlpy_corpus_dir()), glob_pattern="**/*.txt", limit=spec.limit or -1, unit=text_unit)
    if spec.path == "bundled:python-docs":
        return ListReader(python_docs_english(unit="paragraph"), limit=spec.limit or -1)
    raise DataError(f"unknown bundled corpus {spec.path!r}; bundled: {', '.join(BUNDLED)}")


def _paragraphs(text: str) -> Iterator[str]:
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line.strip())
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)
