"""Training data: the corpus tokenised once into memory-mapped shards, read as packed blocks in a resumable order.

* :func:`tokenize_to_shards` streams documents through the merged tokenizer and writes ``uint32`` shards of the
  concatenated token stream, each document followed by EOS, plus ``index.json`` (written last, so a folder with an
  index is complete).
* :class:`PackedBlocks` cuts the stream into blocks of ``sequence_length`` tokens (documents joined with EOS; the last
  partial block is dropped).
* :class:`BlockStream` hands out micro-batches in a deterministic order: a seeded permutation of the blocks per epoch,
  consumed by a position counter, so a resumed run reads exactly what the interrupted one would have read. With
  English replay, each block of the global sequence comes from English or Korean by an even, deterministic schedule.
  With several processes, rank ``r`` of ``w`` takes blocks ``r, r + w, ...`` of each micro-step's share.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from redwhale.core.errors import DataError
from redwhale.core.io import atomic_dir, atomic_write_json

DTYPE = np.uint32
INDEX = "index.json"


def tokenize_to_shards(
    tokenizer, texts: Iterable[str], out: Path, shard_tokens: int = 1 << 26, batch: int = 512
) -> dict[str, Any]:
    """Tokenise ``texts`` (each followed by EOS) into ``out/shard-XXXXX.bin`` files and ``out/index.json``."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to join documents with")
    if len(tokenizer) >= 2**32:
        raise DataError("vocabulary too large for uint32 shards")
    files: list[dict[str, Any]] = []
    documents = 0
    with atomic_dir(out) as tmp:
        buffer: list[np.ndarray] = []
        buffered = 0

        def flush() -> None:
            nonlocal buffer, buffered
            if not buffered:
                return
            name = f"shard-{len(files):05d}.bin"
            np.concatenate(buffer).astype(DTYPE).tofile(tmp / name)
            files.append({"name": name, "tokens": int(buffered)})
            buffer, buffered = [], 0

        pending: list[str] = []

        def encode() -> None:
            nonlocal buffered, documents
            for ids in tokenizer(pending, add_special_tokens=False)["input_ids"]:
                array = np.asarray([*ids, eos], dtype=DTYPE)
                buffer.append(array)
                buffered += len(array)
                documents += 1
            pending.clear()
            if buffered >= shard_tokens:
                flush()

        for text in texts:
            if text:
                pending.append(text)
            if len(pending) >= batch:
                encode()
        if pending:
            encode()
        flush()
        if not files:
            raise DataError("no text to tokenise for training")
        index = {
            "files": files,
            "tokens": sum(f["tokens"] for f in files),
            "documents": documents,
            "eos_id": eos,
            "vocab_size": len(tokenizer),
            "dtype": "uint32",
        }
        atomic_write_json(tmp / INDEX, index)
    return index


class PackedBlocks:
    """Fixed-length blocks over the token stream of a shard folder (memory-mapped, read lazily)."""

    def __init__(self, folder: Path, sequence_length: int):
        path = Path(folder) / INDEX
        if not path.is_file():
            raise DataError(f"no tokenised data in {folder} (missing {INDEX})")
        self.index = json.loads(path.read_text())
        self.sequence_length = sequence_length
        self.arrays = [np.memmap(Path(folder) / f["name"], dtype=DTYPE, mode="r") for f in self.index["files"]]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.tokens = int(self.offsets[-1])
        self.count = self.tokens // sequence_length
        if self.count == 0:
            raise DataError(f"{folder}: {self.tokens} tokens is less than one block of {sequence_length}")

    def __len__(self) -> int:
        return self.count

    def block(self, i: int) -> np.ndarray:
        start = i * self.sequence_length
        out = np.empty(self.sequence_length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        while filled < self.sequence_length:
            local = start + filled - self.offsets[shard]
            take = min(self.sequence_length - filled, len(self.arrays[shard]) - local)
            out[filled : filled + take] = self.arrays[shard][local : local + take]
            filled += take
            shard += 1
        return out


class BlockOrder:
    """A seeded permutation of ``n`` blocks per epoch: position ``p`` maps to a block index."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def __call__(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[position % self.n])


@dataclass
class StreamState:
    """Where the stream stands: blocks consumed per source, and global blocks handed out."""

    korean: int = 0
    english: int = 0
    global_blocks: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"korean": self.korean, "english": self.english, "global_blocks": self.global_blocks}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> StreamState:
        return cls(int(data["korean"]), int(data["english"]), int(data["global_blocks"]))


class BlockStream:
    """Micro-batches of packed blocks, Korean with an optional share of English, deterministic and resumable."""

    def __init__(
        self,
        korean: PackedBlocks,
        english: PackedBlocks | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        state: StreamState | None = None,
    ):
        self.korean, self.english = korean, english
        self.korean_order = BlockOrder(len(korean), seed)
        self.english_order = BlockOrder(len(english), seed + 1) if english is not None else None
        self.rank, self.world_size = rank, world_size
        self.state = state or StreamState()

    def _take(self, english_share: float) -> np.ndarray:
        g = self.state.global_blocks
        use_english = english_share > 0 and math.floor((g + 1) * english_share) > math.floor(g * english_share)
        self.state.global_blocks += 1
        if use_english:
            if self.english is None:
                raise DataError("english_share > 0 but no English data was given")
            block = self.english.block(self.english_order(self.state.english))
            self.state.english += 1
        else:
            block = self.korean.block(self.korean_order(self.state.korean))
            self.state.korean += 1
        return block

    def next_batch(self, micro_batch_size: int, english_share: float = 0.0) -> torch.Tensor:
        """This rank's micro-batch; every rank advances the shared position by ``world_size * micro_batch_size``."""
        mine = []
        for slot in range(micro_batch_size * self.world_size):
            block = self._take(english_share)
            if slot // micro_batch_size == self.rank:
                mine.append(block)
        return torch.from_numpy(np.stack(mine))
