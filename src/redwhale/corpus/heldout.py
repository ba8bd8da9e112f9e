"""Deterministic samples of held-out text, the same for every phase that measures."""

from __future__ import annotations

import random
from collections.abc import Iterable

from redwhale.corpus.split import split_of


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


def training_texts(texts: Iterable[str], seed: int = 0, fraction: float = 0.05) -> Iterable[str]:
    """The documents of the training split, streamed."""
    return (t for t in texts if split_of(t, seed, fraction) == "train")
