"""What several benchmarks share: the real Korean data beside the clone and SmolLM2 extended to a Korean vocabulary."""

from __future__ import annotations

from pathlib import Path

from redwhale.config.schema import CorpusInput, ExtendSection
from redwhale.core.scripts import get_script
from redwhale.core.text import heldout_sample, training_texts
from redwhale.corpus.bundled import python_docs_english
from redwhale.corpus.readers import iter_texts
from redwhale.models.adapt import extend_and_compare
from redwhale.tokenizer.base import load_base
from redwhale.tokenizer.merge import merge_tokenizers
from redwhale.tokenizer.train import train_new
from redwhale.train.run import prepare_data

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def corpus_texts(corpus: Path = CORPUS) -> list[str]:
    if not corpus.is_file():
        raise SystemExit(f"needs {corpus} (see ../shared/data/PROVENANCE.md)")
    return list(iter_texts([CorpusInput(path=str(corpus))]))


def heldout_texts(texts: list[str], korean_chars: int = 30_000, english_chars: int = 20_000):
    """The held-out Korean documents of the corpus and English from CPython's reference (never trained on)."""
    korean = heldout_sample(texts, korean_chars)
    english = heldout_sample(python_docs_english(unit="paragraph"), english_chars, heldout_only=False)
    return korean, english


def extended_smollm2(
    work: Path, corpus: Path = CORPUS, base: str = "smollm2-135m", size: int = 20_000, init: str = "decomposition"
) -> tuple[Path, Path]:
    """SmolLM2 grown to a ``size`` Korean tokenizer trained on the corpus's training split, and that split
    tokenised; both cached in ``work``."""
    model, merged = work / f"extended-{size}-{init}", work / f"merged-{size}"
    texts = corpus_texts(corpus)
    if not (model / "config.json").is_file():
        _, base_tokenizer = load_base(base)
        if not (work / "ko-tokenizer" / "tokenizer.json").is_file():
            train_new(training_texts(texts), base_tokenizer, 40_000, get_script("hangul"), work / "ko-tokenizer")
        merge_tokenizers(base, work / "ko-tokenizer", merged, "hangul", 64, size)
        section = ExtendSection(init=init, compare=[], calibration_chars=8000)
        extend_and_compare(base, merged, section, training_texts(texts), [], [], model, None)
    data, _ = prepare_data(model, training_texts(texts), None, work / f"data-{size}")
    return model, data
