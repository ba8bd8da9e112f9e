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
import io
import math
import re
import struct
import unicodedata
from pathlib import Path

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
from datatrove.utils.typeshelper import ExtensionHelperSD, StatHints
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
_OTHER_SCRIPTS = re.compile("[^\x00-\x7f\uac00-\ud7a3\u3131-\u318e]+")


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
    does the same steps, then recomposes (Hangul stays syllables), and only on the runs of characters that are not
    ASCII or Hangul (for which NFD, strip, NFC changes nothing): a page with one "★" no longer decomposes and
    recomposes every syllable. (The one difference from a whole-text NFC: a stray conjoining jamo after a syllable
    is not composed into it; the normaliser has already mapped such jamo.)
    """
    return _OTHER_SCRIPTS.sub(_strip_marks, simplify_text(text, _NO_DIACRITIC_STRIP))


def _strip_marks(match: re.Match) -> str:
    decomposed = unicodedata.normalize("NFD", match.group())
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
    """Writes, for every document, its MinHash signature over character n-grams (datatrove's signature files), its
    exact hash (datatrove's exact-dedup signatures) and its shingles (for :class:`ConfirmCandidates`).

    Written by hand rather than through ``MinhashDedupSignature.run``: that writes each band of each document with a
    ``struct.pack`` call and sorts the files in a second pass; here the signatures of a task are computed into one
    matrix and each band file is written sorted, once, in datatrove's exact layout."""

    name = "🫂 Korean dedup signatures"

    def __init__(
        self,
        minhash_folder: DataFolderLike,
        exact_folder: DataFolderLike | None,
        config: MinhashConfig,
        char_ngrams: int = 5,
        shingles_folder: DataFolderLike | None = None,
    ):
        super().__init__(output_folder=minhash_folder, config=config, language=_UnusedWordTokenizer())
        self.char_ngrams = char_ngrams
        self._exact = ExactDedupSignature(exact_folder, exact_config()) if exact_folder else None
        self.shingles_folder = get_datafolder(shingles_folder) if shingles_folder else None

    def get_shingles(self, text: str) -> np.ndarray:
        return char_ngram_hashes(normalized_for_hash(text), self.char_ngrams).reshape((-1, 1))

    def minhash(self, shingles: np.ndarray) -> np.ndarray:
        """The signature of a ``(n, 1)`` array of shingle hashes: per hash function, the smallest value.

        Hash functions are multiply-add-shift, ``((a * x + b) mod 2**64) >> 32`` with odd ``a`` (Dietzfelbinger's
        universal family from 64-bit keys to 32-bit values), instead of datatrove's ``(a * x + b) % (2**61 - 1)``:
        a uint64 division per shingle and hash was 3/4 of the signature time, and in-place wrapping arithmetic is
        ~4x faster. The values are 32-bit, so two different minima collide with probability 2**-32."""
        a, b = self.parameters
        with np.errstate(over="ignore"):
            values = shingles * (a | np.uint64(1))
            values += b
            values >>= np.uint64(32)
        return values.min(axis=0)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        """The signature by band, as datatrove's ``get_signature`` returns it."""
        signature, rows = self.minhash(shingles), self.config.hashes_per_bucket
        return [signature[band * rows : (band + 1) * rows].tolist() for band in range(self.config.num_buckets)]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        hash_exact = create_hash_func(exact_config().hash_config, bytes)
        exact: list[tuple[int, int, int]] = []
        signatures, ids, shingle_sets = [], [], []
        with self.track_time():
            for index, doc in enumerate(data):
                self.stat_update(StatHints.total)
                normalized = normalized_for_hash(doc.text)
                if self._exact is not None:
                    exact.append((hash_exact(normalized.encode("utf-8")), 1, index))
                shingles = char_ngram_hashes(normalized, self.char_ngrams).reshape((-1, 1))
                shingle_sets.append(np.unique((shingles[:, 0] >> np.uint64(32)).astype(np.uint32)))
                if shingles.size:
                    signatures.append(self.minhash(shingles))
                    ids.append(index)
            self._write_bands(rank, signatures, ids)
            if self.shingles_folder is not None:
                self._write_shingles(rank, shingle_sets, signatures, ids)
        if self._exact is not None:
            self._exact.save_hashes(rank, exact)

    def _write_bands(self, rank: int, signatures: list[np.ndarray], ids: list[int]) -> None:
        rows = self.config.hashes_per_bucket
        matrix = np.stack(signatures) if signatures else np.zeros((0, rows * self.config.num_buckets), np.uint64)
        docs = np.asarray(ids, dtype=np.uint32)
        record = np.dtype([(f"h{i}", "<u8") for i in range(rows)] + [("doc", "<u4")])
        for band in range(self.config.num_buckets):
            block = np.empty(len(docs), dtype=record)
            for i in range(rows):
                block[f"h{i}"] = matrix[:, band * rows + i]
            block["doc"] = docs
            block = block[np.lexsort([docs] + [block[f"h{i}"] for i in reversed(range(rows))])]
            with self.output_folder.open(f"bucket_{band:03d}/{rank:05d}.minhash.sig", mode="wb") as handle:
                handle.write(block.tobytes())

    def _write_shingles(
        self, rank: int, shingle_sets: list[np.ndarray], signatures: list[np.ndarray], ids: list[int]
    ) -> None:
        offsets = np.zeros(len(shingle_sets) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in shingle_sets])
        flat = np.concatenate(shingle_sets) if shingle_sets else np.zeros(0, np.uint32)
        full = np.zeros((len(shingle_sets), self.num_hashes), dtype=np.uint32)  # the values are 32-bit
        if ids:
            full[np.asarray(ids)] = np.stack(signatures)
        with self.shingles_folder.open(f"{rank:05d}.npz", mode="wb") as handle:
            np.savez(handle, offsets=offsets, shingles=flat, signatures=full)


PAIR = np.dtype([("f1", "<u4"), ("d1", "<u4"), ("f2", "<u4"), ("d2", "<u4")])  # datatrove's "<4I" dups record


class ShingleStore:
    """The shingle sets that :class:`DedupSignatures` wrote, by (rank, document index), loaded per rank on demand."""

    def __init__(self, folder: DataFolderLike):
        self.folder = get_datafolder(folder)
        self._ranks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _load(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if rank not in self._ranks:
            with self.folder.open(f"{rank:05d}.npz", "rb") as handle:
                stored = np.load(io.BytesIO(handle.read()))
                self._ranks[rank] = (stored["offsets"], stored["shingles"], stored["signatures"])
        return self._ranks[rank]

    def get(self, rank: int, doc: int) -> np.ndarray:
        offsets, flat, _ = self._load(rank)
        return flat[offsets[doc] : offsets[doc + 1]]

    def signatures(self, members: np.ndarray) -> np.ndarray:
        """The full MinHash signatures of ``(rank, doc)`` rows, one row each."""
        return np.stack([self._load(rank)[2][doc] for rank, doc in members.tolist()])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted, unique shingle arrays."""
    if not len(a) or not len(b):
        return 0.0
    common = np.count_nonzero(np.isin(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def band_groups(records: list[np.ndarray], rows: int) -> list[np.ndarray]:
    """The documents that share one band signature, as arrays of ``(task, doc)`` rows, from every task's sorted
    signature file of the band (``records[task]``, datatrove's layout)."""
    keys = [np.stack([r[f"h{i}"] for i in range(rows)], axis=1) for r in records]
    owners = [np.column_stack([np.full(len(r), t, np.uint32), r["doc"]]) for t, r in enumerate(records)]
    if not keys or not sum(len(k) for k in keys):
        return []
    hashes, members = np.concatenate(keys), np.concatenate(owners)
    order = np.lexsort(hashes.T[::-1])
    hashes, members = hashes[order], members[order]
    starts = np.flatnonzero(np.concatenate([[True], np.any(hashes[1:] != hashes[:-1], axis=1)]))
    sizes = np.diff(np.concatenate([starts, [len(hashes)]]))
    return [members[a : a + n] for a, n in zip(starts, sizes, strict=True) if n > 1]


class FindNearDuplicates(PipelineStep):
    """MinHash LSH candidates, confirmed: documents sharing a band signature are candidates, and a candidate pair is
    kept only when its documents' exact Jaccard similarity of character n-grams reaches ``threshold``. With the default
    32 bands of 4 rows a pair at Jaccard 0.3 collides in some band with probability ~23%, so without confirmation a document
    with many such neighbours (pages of a site sharing a header) is almost surely removed.

    Reads the signature files of :class:`DedupSignatures` and writes the confirmed pairs as datatrove's bucket stage
    would (``<band>_00.dups``, ``<4I`` records), so datatrove's cluster stage builds clusters from confirmed edges only.
    Within a group each document is compared with the group's leaders (the documents that matched no earlier leader),
    so a false collision does not split a true pair. Written by hand, and vectorised: datatrove's bucket stage merges
    the files through a Python heap in one task per band, and its MinHash stages do not verify candidates."""

    type = "🫂 - DEDUP"
    name = "🎯 near-duplicate candidates, confirmed"

    def __init__(
        self, signatures_folder, shingles_folder, output_folder, config: MinhashConfig, threshold: float = 0.5
    ):
        super().__init__()
        self.signatures = get_datafolder(signatures_folder)
        self.shingles_folder = shingles_folder
        self.output_folder = get_datafolder(output_folder)
        self.config, self.threshold = config, threshold
        # The exact check is skipped below the estimate a pair at the threshold stays above with p > 0.9999: four
        # standard errors of the MinHash estimate, sqrt(J (1 - J) / hashes), below the threshold.
        hashes = config.num_buckets * config.hashes_per_bucket
        self.screen = threshold - 4 * math.sqrt(threshold * (1 - threshold) / hashes)

    def _band(self, band: int) -> list[np.ndarray]:
        rows = self.config.hashes_per_bucket
        record = np.dtype([(f"h{i}", "<u8") for i in range(rows)] + [("doc", "<u4")])
        files = sorted(self.signatures.list_files(subdirectory=f"bucket_{band:03d}"))
        tasks = {int(Path(f).name.removesuffix(".minhash.sig")): f for f in files}
        out = []
        for task in range(max(tasks) + 1 if tasks else 0):
            raw = b""
            if task in tasks:
                with self.signatures.open(tasks[task], "rb") as handle:
                    raw = handle.read()
            out.append(np.frombuffer(raw, dtype=record))
        return out

    def _confirm(self, group: np.ndarray, store: ShingleStore, checked: dict) -> list[tuple[int, int, int, int]]:
        """Confirmed edges of one band group. The full signatures screen the leaders first: only a leader whose
        estimated Jaccard (the share of equal hashes) reaches ``self.screen`` is compared exactly, so a large group
        of unrelated documents (pages whose band minima all fall in a shared footer) costs a matrix comparison, not
        a quadratic number of exact ones. A pair is checked once, whichever bands it collides in (``checked``)."""
        members = [tuple(m) for m in group.tolist()]
        signatures = store.signatures(group)
        leaders: list[int] = []
        edges = []
        for i, member in enumerate(members):
            match = None
            if leaders:
                estimate = np.count_nonzero(signatures[leaders] == signatures[i], axis=1) / signatures.shape[1]
                for k in np.flatnonzero(estimate >= self.screen).tolist():
                    leader = members[leaders[k]]
                    key = (leader, member) if leader < member else (member, leader)
                    if key not in checked:
                        self.stat_update("comparisons")
                        checked[key] = jaccard(store.get(*member), store.get(*leader)) >= self.threshold
                    if checked[key]:
                        match = leader
                        break
            if match is None:
                leaders.append(i)
            else:
                edges.append((*match, *member))
        return edges

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        store, checked = ShingleStore(self.shingles_folder), {}
        with self.track_time():
            for band in range(rank, self.config.num_buckets, world_size):
                groups = band_groups(self._band(band), self.config.hashes_per_bucket)
                edges = [e for group in groups for e in self._confirm(group, store, checked)]
                with self.output_folder.open(f"{band:05d}_00.dups", "wb") as out:
                    out.write(np.asarray(edges, dtype="<u4").reshape(-1, 4).tobytes())
                self.stat_update("candidate_pairs", value=sum(len(g) - 1 for g in groups))
                self.stat_update("confirmed_pairs", value=len(edges))
        if data:
            yield from data


class RankFileReader(JsonlReader):
    """Reads exactly the file that the same rank wrote in an earlier stage (``<rank>.jsonl``), so that document
    positions line up with the signatures (datatrove's default sharding skips missing files and shifts ranks)."""

    name = "📖 rank file"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        name = f"{rank:05d}.jsonl"
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
