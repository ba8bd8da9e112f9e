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
import struct

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature, get_sig_dtype
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.readers import JsonlReader
from datatrove.utils.binaryio import read_np_from_file
from datatrove.utils.hashing import HashConfig, create_hash_func
from datatrove.utils.text import simplify_text
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


def normalized_for_hash(text: str) -> str:
    """Lower-cased, punctuation-free, whitespace-collapsed text (datatrove's ``simplify_text``)."""
    return simplify_text(text)


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
        self._char_hash = create_hash_func(config.hash_config, bytes)

    def get_shingles(self, text: str) -> np.ndarray:
        chars = normalized_for_hash(text)
        n = self.char_ngrams
        grams = {chars[i : i + n] for i in range(len(chars) - n + 1)}
        return np.fromiter(
            (self._char_hash(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams)
        ).reshape((-1, 1))

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
