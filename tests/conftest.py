"""Shared fixtures: tiny tokenizers and random 2-layer Llama models, built once per test session.

The environment is made hermetic before anything imports transformers: the Hub is offline and caches point into a
temporary folder, so no test touches the network, the user's cache or ``../shared``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HERMETIC = tempfile.mkdtemp(prefix="redwhale-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_HERMETIC, "hf")
os.environ["XDG_CACHE_HOME"] = os.path.join(_HERMETIC, "cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

from helpers import make_tiny_llama, train_tiny_bpe, train_tiny_sentencepiece  # noqa: E402


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(fixtures_dir) -> Path:
    """A tiny byte-level BPE tokenizer (English-heavy, so Korean falls apart into bytes, like a real base)."""
    return train_tiny_bpe(fixtures_dir / "bpe")


@pytest.fixture(scope="session")
def sp_tokenizer_dir(fixtures_dir) -> Path:
    """A tiny SentencePiece BPE tokenizer with byte fallback (Llama-2 style) and its fast twin."""
    return train_tiny_sentencepiece(fixtures_dir / "sp")


@pytest.fixture(scope="session")
def tied_llama_dir(fixtures_dir, bpe_tokenizer_dir) -> Path:
    """A random 2-layer Llama with tied input and output embeddings."""
    return make_tiny_llama(fixtures_dir / "llama-tied", bpe_tokenizer_dir, tied=True)


@pytest.fixture(scope="session")
def untied_llama_dir(fixtures_dir, bpe_tokenizer_dir) -> Path:
    """A random 2-layer Llama with a separate LM head."""
    return make_tiny_llama(fixtures_dir / "llama-untied", bpe_tokenizer_dir, tied=False, seed=1)


@pytest.fixture(scope="session")
def tiny_gguf(fixtures_dir, tied_llama_dir) -> Path:
    """A GGUF file (Q8_0 weights) of the tied tiny Llama, written the way llama.cpp lays it out."""
    from helpers import write_tiny_gguf

    return write_tiny_gguf(tied_llama_dir, fixtures_dir / "tiny-llama.Q8_0.gguf")


@pytest.fixture(scope="session")
def merged_tokenizer_dir(fixtures_dir, bpe_tokenizer_dir) -> Path:
    """The tiny BPE base merged with a Korean tokenizer trained on the fixture lines (padded to 64)."""
    from helpers import KOREAN_LINES
    from redwhale.core.scripts import SCRIPTS
    from redwhale.tokenizer.base import load_base
    from redwhale.tokenizer.merge import merge_tokenizers
    from redwhale.tokenizer.train import train_new

    _, base = load_base(str(bpe_tokenizer_dir))
    train_new(KOREAN_LINES * 3, base, 700, SCRIPTS["hangul"], fixtures_dir / "ko-bpe", "script_words", 1)
    out = fixtures_dir / "merged"
    merge_tokenizers(str(bpe_tokenizer_dir), fixtures_dir / "ko-bpe", out, "hangul", 64)
    return out


@pytest.fixture(scope="session")
def extended_tied_dir(fixtures_dir, tied_llama_dir, merged_tokenizer_dir) -> Path:
    """The tied tiny Llama extended to the merged tiny tokenizer (decomposition init)."""
    from helpers import extend_model

    return extend_model(tied_llama_dir, merged_tokenizer_dir, fixtures_dir / "extended-tied")


@pytest.fixture(scope="session")
def extended_untied_dir(fixtures_dir, untied_llama_dir, merged_tokenizer_dir) -> Path:
    from helpers import extend_model

    return extend_model(untied_llama_dir, merged_tokenizer_dir, fixtures_dir / "extended-untied")
