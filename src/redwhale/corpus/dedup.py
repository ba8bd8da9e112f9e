"""Deduplication steps for Korean: exact (a hash of the normalised text) and near (MinHash over character n-grams).

Why characters: datatrove's MinHash shingles word 5-grams. A Korean word carries its particles, so editing one word
breaks every shingle that spans it, and with 10% of words edited almost no 5-word shingle survives (in our trial the
stock settings found 18% of such pairs). Character n-grams (5 by default) lose only the few shingles around an edit.

The steps write and read datatrove's own file formats, so its bucket, cluster and exact-duplicate finder stages run
in between unchanged: :class:`DedupSignatures` writes MinHash signatures (``MinhashDedupSignature``'s layout) and
exact-hash signatures (``ExactDedupSignature``'s) for each document in one pass; :class:`DedupFilter` drops both
kinds in one pass with the drop reason, because both index documents by their position in the task's stream.
"""

from __future__ import annotations

import contextlib
import functools
import re
import struct
import unicodedata

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature, get_sig_dtype
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.readers import JsonlReader
from datatrove.utils.binaryio import read_np_from_file
from datatrove.utils.hashing import HashConfig, create_hash_func
from datatrove.utils.text import TextNormConfig, simplify_text
from datatrove.utils.typeshelper import ExtensionHelperSD
from datatrove.utils.word_tokenizers import WordTokenizer


class _UnusedWordTokenizer(WordTokenizer):
    """Stands in for the word tokenizer MinhashDedupSignature loads by default (spaCy for English): the character
    shingles below do not use words."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


_NO_DIACRITIC_STRIP = TextNormConfig(norm_unicode_diacritics=False)


@functools.cache
def _combining_marks() -> re.Pattern:
    """A character class of every nonspacing mark (Mn), as ranges: a class of 2,000 single characters is slow."""
    points = [c for c in range(0x110000) if unicodedata.category(chr(c)) == "Mn"]
    ranges, start = [], points[0]
    for prev, cur in zip(points, points[1:] + [-1], strict=True):
        if cur != prev + 1:
            ranges.append(f"\\U{start:08x}-\\U{prev:08x}")
            start = cur
    return re.compile(f"[{''.join(ranges)}]")


def normalized_for_hash(text: str) -> str:
    """Lower-cased, punctuation-free, whitespace-collapsed text without diacritics, in NFC.

    datatrove's ``simplify_text`` strips diacritics by NFD without recomposing, which turns every Hangul syllable
    into two or three jamo (so a "5-gram" would span about two syllables) and runs a Python loop per character. This
    does the same steps, then recomposes (Hangul stays syllables) and skips the loop when there is no combining mark.
    """
    text = simplify_text(text, _NO_DIACRITIC_STRIP)
    decomposed = unicodedata.normalize("NFD", text)
    marks = _combining_marks()
    if marks.search(decomposed):
        decomposed = marks.sub("", decomposed)
    return unicodedata.normalize("NFC", decomposed)


def char_ngram_hashes(text: str, n: int) -> np.ndarray:
    """Distinct 64-bit hashes of the character n-grams of ``text`` (one n-gram: the whole text when shorter).

    Written by hand (vectorised): datatrove shingles words, and hashing each n-gram through xxhash from Python costs
    a call per character. A polynomial rolling hash over the code points, then a splitmix64 finaliser to spread the
    bits, both in wrapping uint64 arithmetic.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint64)
    width = min(n, len(codes))
    count = len(codes) - width + 1
    with np.errstate(over="ignore"):
        h = np.zeros(count, dtype=np.uint64)
        for k in range(width):
            h = h * np.uint64(0x100000001B3) + codes[k : k + count] + np.uint64(1)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return np.unique(h)


def _exact_content(doc) -> bytes:
    return normalized_for_hash(doc.text).encode("utf-8")


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=_exact_content, hash_config=HashConfig(precision=64))


class DedupSignatures(MinhashDedupSignature):
    """Writes, for every document, its MinHash signature over character n-grams and its exact hash."""

    name = "🫂 Korean dedup signatures"

    def __init__(
        self,
        minhash_folder: DataFolderLike,
        exact_folder: DataFolderLike | None,
        config: MinhashConfig,
        char_ngrams: int = 5,
    ):
        super().__init__(output_folder=minhash_folder, config=config, language=_UnusedWordTokenizer())
        self.char_ngrams = char_ngrams
        self._exact = ExactDedupSignature(exact_folder, exact_config()) if exact_folder else None

    def get_shingles(self, text: str) -> np.ndarray:
        return char_ngram_hashes(normalized_for_hash(text), self.char_ngrams).reshape((-1, 1))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        exact: list[tuple[int, int, int]] = []
        hash_exact = create_hash_func(exact_config().hash_config, bytes)

        def tap(stream):
            for index, doc in enumerate(stream):
                if self._exact is not None:
                    exact.append((hash_exact(_exact_content(doc)), 1, index))
                yield doc

        super().run(tap(data), rank, world_size)
        if self._exact is not None:
            self._exact.save_hashes(rank, exact)


class RankFileReader(JsonlReader):
    """Reads exactly the file that the same rank wrote in an earlier stage (``<rank>.jsonl.gz``), so that document
    positions line up with the signatures (datatrove's default sharding skips missing files and shifts ranks)."""

    name = "📖 rank file"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            for document in self.read_file(name):
                self.update_doc_stats(document)
                yield document


class DedupFilter(PipelineStep):
    """Drops exact duplicates (``dropped_exact_duplicate``) and near duplicates (``dropped_near_duplicate``) found by
    datatrove's finder stages; the first document of each group is kept."""

    type = "🫂 - DEDUP"
    name = "🫂 Korean dedup filter"

    def __init__(
        self, exact_folder: DataFolderLike | None, clusters_folder: DataFolderLike | None, exclusion_writer=None
    ):
        super().__init__()
        self.exact_folder = get_datafolder(exact_folder) if exact_folder else None
        self.clusters_folder = get_datafolder(clusters_folder) if clusters_folder else None
        self.exclusion_writer = exclusion_writer

    def _exact_duplicates(self, rank: int) -> set[int]:
        if self.exact_folder is None or not self.exact_folder.exists(""):
            return set()
        dtype = get_sig_dtype(exact_config().hash_config)[2]
        found: set[int] = set()
        for folder in self.exact_folder.list_files(include_directories=True, recursive=False):
            path = f"{folder}/{rank:05d}{ExtensionHelperSD.stage_2_duplicates}"
            if self.exact_folder.exists(path):
                with self.exact_folder.open(path, "rb") as handle:
                    found.update(
                        int(x)
                        for x in read_np_from_file(handle, dtype=dtype, is_local_file=self.exact_folder.is_local())
                    )
        return found

    def _near_duplicates(self, rank: int) -> set[int]:
        if self.clusters_folder is None or not self.clusters_folder.isfile(f"{rank:06d}.remove"):
            return set()
        with self.clusters_folder.open(f"{rank:06d}.remove", "rb") as handle:
            raw = handle.read()
        return {value for (value,) in struct.iter_unpack("<I", raw)}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        exact, near = self._exact_duplicates(rank), self._near_duplicates(rank)
        writer = self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext()
        with writer as exclusion:
            for index, doc in enumerate(data):
                with self.track_time():
                    self.stat_update("total")
                    reason = "exact_duplicate" if index in exact else "near_duplicate" if index in near else None
                    if reason:
                        self.stat_update("dropped", f"dropped_{reason}")
                        if exclusion is not None:
                            doc.metadata["filter_reason"] = reason
                            exclusion.write(doc, rank)
                        continue
                    self.stat_update("forwarded")
                yield doc
