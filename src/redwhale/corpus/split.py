"""The deterministic train / held-out split shared by every phase.

A document goes to the held-out split when a hash of its text (salted with the run's seed) falls below the held-out
fraction, so the split does not depend on reading order, sharding or the number of workers, and the same document is
held out by the tokenizer sweep, the initialisation comparison and the evaluation.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "heldout"]


def split_of(text: str, seed: int = 0, heldout_fraction: float = 0.05) -> Split:
    """``heldout`` for a stable ``heldout_fraction`` of texts, ``train`` for the rest."""
    if heldout_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return "heldout" if int.from_bytes(digest, "little") / 2**64 < heldout_fraction else "train"
