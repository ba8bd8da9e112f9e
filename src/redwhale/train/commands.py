"""The training command as a function: tokenise the corpus once, then run the schedule (or continue it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from redwhale.config.schema import TrainSection
from redwhale.train.data import INDEX, tokenize_to_shards

log = logging.getLogger(__name__)


def prepare_data(
    tokenizer_dir: Path, korean: Iterable[str], english: Iterable[str] | None, out: Path
) -> tuple[Path, Path | None]:
    """Tokenise the training texts into ``out/korean`` (and ``out/english``) unless already done."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    korean_dir, english_dir = out / "korean", out / "english"
    if not (korean_dir / INDEX).is_file():
        index = tokenize_to_shards(tokenizer, korean, korean_dir)
        log.info("tokenised %d Korean documents into %d tokens", index["documents"], index["tokens"])
    if english is None:
        return korean_dir, None
    if not (english_dir / INDEX).is_file():
        index = tokenize_to_shards(tokenizer, english, english_dir)
        log.info("tokenised %d English documents into %d tokens", index["documents"], index["tokens"])
    return korean_dir, english_dir


def train_command(
    model_dir: Path,
    korean: Iterable[str],
    english: Iterable[str] | None,
    cfg: TrainSection,
    out: Path,
    seed: int = 0,
    resume: bool = False,
    run_name: str = "redwhale",
) -> dict[str, Any]:
    """Tokenise (once) and train; the final model is written to ``out/model``."""
    from redwhale.train.loop import Trainer

    korean_dir, english_dir = prepare_data(model_dir, korean, english, out / "data")
    trainer = Trainer(model_dir, korean_dir, english_dir, cfg, out, seed, run_name)
    return trainer.run(resume=resume)
