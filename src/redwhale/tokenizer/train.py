"""Training a standalone tokenizer for the target language, of the same kind as the base's.

* byte-level BPE bases: a byte-level BPE trained with ``tokenizers``, with the base's own normaliser, pre-tokeniser
  and decoder, so that its tokens are exactly the strings the base's BPE would have to build;
* SentencePiece bases: a SentencePiece BPE with byte fallback trained with ``sentencepiece``, with the base's
  normalisation settings.

By default it is trained on the words of the target script only (the base pre-tokeniser's pieces that hold a
character of the script): the merge can only take tokens that prove the script (so that other languages keep their
tokenisation), so vocabulary spent on digits or English would be thrown away at the merge.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

from redwhale.core.errors import DataError, TokenizerError
from redwhale.core.scripts import Script
from redwhale.tokenizer.base import BaseTokenizer
from redwhale.tokenizer.merge import NewTokenizer

log = logging.getLogger(__name__)

TrainOn = Literal["script_words", "all_text"]


class CorpusGuard:
    """Wraps the training texts: counts documents and script characters, so that an empty corpus or one without the
    target script is a clear error instead of a silently useless tokenizer."""

    def __init__(self, texts: Iterable[str], script: Script):
        self._texts = texts
        self.script = script
        self.documents = 0
        self.script_documents = 0
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.documents += 1
            self.characters += len(text)
            if self.script.in_text(text):
                self.script_documents += 1
            yield text

    def check(self) -> None:
        if self.documents == 0:
            raise DataError("the corpus is empty: no documents with text")
        if self.script_documents == 0:
            raise DataError(f"the corpus has no {self.script.name} text ({self.documents} documents read)")


def script_words(texts: Iterable[str], pre_tokenizer, script: Script) -> Iterator[str]:
    """The pieces of each text, as the base pre-tokeniser splits it, that hold a character of the script."""
    search = script.pattern.search
    for text in texts:
        for _, (start, end) in pre_tokenizer.pre_tokenize_str(text):
            if search(text, start, end):
                yield text[start:end]


def train_bytelevel(
    texts: Iterable[str],
    base: BaseTokenizer,
    vocab_size: int,
    script: Script,
    train_on: TrainOn = "script_words",
    min_frequency: int = 2,
    show_progress: bool = False,
):
    """A byte-level BPE of ``vocab_size`` tokens trained on ``texts``, sharing the base's text pipeline."""

    shell = Tokenizer.from_str(json.dumps(base.data))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = shell.normalizer
    tokenizer.pre_tokenizer = shell.pre_tokenizer
    tokenizer.decoder = shell.decoder
    guard = CorpusGuard(texts, script)
    stream: Iterable[str] = guard
    if train_on == "script_words":
        stream = script_words(guard, shell.pre_tokenizer, script)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(stream, trainer)
    guard.check()
    if tokenizer.get_vocab_size() < vocab_size:
        log.warning("the corpus supports only %d tokens (asked for %d)", tokenizer.get_vocab_size(), vocab_size)
    return tokenizer


def train_sentencepiece(
    texts: Iterable[str],
    base: BaseTokenizer,
    vocab_size: int,
    script: Script,
    out_prefix: Path,
    train_on: TrainOn = "script_words",
    max_sentences: int = 2_000_000,
) -> Path:
    """A SentencePiece BPE with byte fallback of ``vocab_size`` pieces; returns the ``.model`` file."""

    settings = _sentencepiece_settings(base)
    guard = CorpusGuard(texts, script)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        with open(corpus, "w", encoding="utf-8") as handle:
            for text in guard:
                for line in text.splitlines():
                    if train_on == "script_words":
                        line = " ".join(word for word in line.split() if script.in_text(word))
                    if line.strip():
                        handle.write(line.strip() + "\n")
        guard.check()
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(out_prefix),
                vocab_size=vocab_size,
                model_type="bpe",
                byte_fallback=True,
                character_coverage=0.9995,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                max_sentence_length=1 << 16,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                minloglevel=2,
                **settings,
            )
        except RuntimeError as exc:
            raise TokenizerError(f"sentencepiece training failed: {str(exc).splitlines()[-1]}") from None
    return out_prefix.with_suffix(".model")


def _sentencepiece_settings(base: BaseTokenizer) -> dict:
    """Normalisation settings copied from the base's SentencePiece model, when it has one."""
    defaults = {
        "normalization_rule_name": "identity",
        "add_dummy_prefix": True,
        "remove_extra_whitespaces": False,
        "split_digits": True,
    }
    if base.sp_model is None:
        return defaults

    proto = model_pb2.ModelProto()
    proto.ParseFromString(base.sp_model.read_bytes())
    return {
        "normalization_rule_name": proto.normalizer_spec.name or "identity",
        "add_dummy_prefix": proto.normalizer_spec.add_dummy_prefix,
        "remove_extra_whitespaces": proto.normalizer_spec.remove_extra_whitespaces,
        "split_digits": proto.trainer_spec.split_digits,
    }


def train_new(
    texts: Iterable[str],
    base: BaseTokenizer,
    size: int,
    script: Script,
    out: Path,
    train_on: TrainOn = "script_words",
    min_frequency: int = 2,
):
    """Train the standalone tokenizer of the base's kind and save it as a Hugging Face tokenizer folder
    (``tokenizer.json``, plus ``tokenizer.model`` for SentencePiece)."""

    out.mkdir(parents=True, exist_ok=True)
    if base.kind == "bytelevel":
        tokenizer = train_bytelevel(texts, base, size, script, train_on, min_frequency)
        PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(out))
    else:
        model = train_sentencepiece(texts, base, size, script, out / "tokenizer", train_on)
        _sentencepiece_fast(model, out)
    return NewTokenizer.load(out)


def _sentencepiece_fast(model: Path, out: Path) -> None:
    """Save a SentencePiece model with its fast twin (``tokenizer.json``), as transformers converts it."""

    tokenizer = LlamaTokenizer(vocab_file=str(model), legacy=False, add_prefix_space=True)
    tokenizer.save_pretrained(str(out))
    (out / "tokenizer.vocab").unlink(missing_ok=True)
