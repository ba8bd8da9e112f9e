"""The deterministic train / held-out split shared by every phase, and fixed samples of held-out text.

A document goes to the held-out split when a hash of its text (salted with the run's seed) falls below the held-out
fraction, so the split does not depend on reading order, sharding or the number of workers, and the same document is
held out by the tokenizer sweep, the initialisation comparison and the evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from typing import Literal

Split = Literal["train", "heldout"]


def split_of(text: str, seed: int = 0, heldout_fraction: float = 0.05) -> Split:
    """``heldout`` for a stable ``heldout_fraction`` of texts, ``train`` for the rest."""
    if heldout_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return "heldout" if int.from_bytes(digest, "little") / 2**64 < heldout_fraction else "train"


def heldout_sample(
    texts: Iterable[str],
    max_chars: int,
    seed: int = 0,
    fraction: float = 0.05,
    doc_chars: int = 2000,
    heldout_only: bool = True,
) -> list[str]:
    """Held-out documents (by :func:`split_of`), shuffled with ``seed``, each cut at ``doc_chars`` characters, until
    ``max_chars`` characters. With ``heldout_only=False`` every document is a candidate (text never trained on)."""
    pool = [t for t in texts if t.strip() and (not heldout_only or split_of(t, seed, fraction) == "heldout")]
    random.Random(seed).shuffle(pool)
    sample, chars = [], 0
    for text in pool:
        if chars >= max_chars:
            break
        sample.append(text[:doc_chars])
        chars += len(sample[-1])
    return sample


def heldout_after(
    texts: Iterable[str],
    skip_chars: int,
    max_chars: int,
    seed: int = 0,
    fraction: float = 0.05,
    heldout_only: bool = True,
) -> list[str]:
    """The documents :func:`heldout_sample` gives after the ``skip_chars`` characters it gives first (the same
    shuffle, further on), up to ``max_chars`` more: held-out text disjoint from a sample of ``skip_chars`` (a
    document repeated word for word in that sample is left out too)."""
    sample = heldout_sample(texts, skip_chars + max_chars, seed, fraction, heldout_only=heldout_only)
    chars = 0
    for index, text in enumerate(sample):
        if chars >= skip_chars:
            first = set(sample[:index])
            return [t for t in sample[index:] if t not in first]
        chars += len(text)
    return []


def training_texts(texts: Iterable[str], seed: int = 0, fraction: float = 0.05) -> Iterable[str]:
    """The documents of the training split, streamed."""
    return (t for t in texts if split_of(t, seed, fraction) == "train")
