"""Korean filters as datatrove filters: each returns keep, or drop with a reason that the stats count.

Why not the Gopher rules as they are: they count whitespace-separated *words*, and a Korean word (eojeol) is a stem
plus particles or endings, so it is longer and rarer than an English word. The stop-word rule (a document must hold
"the", "and", ...) drops every Korean document, and word-length and word-count bounds tuned for English misfire. The
rules here count characters and lines instead, which mean the same thing in Korean and English:

* script: the share of Hangul among letters (a model-free language check that is accurate for Korean; an optional
  fastText language-ID model is used when a local model file is given);
* length in characters; the share of symbols (neither letters, digits nor whitespace) and of digits;
* repetition: duplicated lines and paragraphs (as Gopher, by count and by characters), duplicated character n-grams
  (Gopher's word n-gram rule carried over to characters), and runs of one character (``ㅋㅋㅋㅋ``, ``!!!!``);
* undecodable text: the share of U+FFFD replacement characters (what is left of bytes decoded with the wrong codec,
  e.g. UTF-8 read as cp949; mojibake ftfy can repair is repaired earlier, in normalisation);
* no sentences: C4 keeps lines ending in terminal punctuation, which drops informal Korean (reviews, comments end
  without a period). A Korean sentence ends in a predicate, and predicates end in few syllables (다, 요, 죠, 까, 니,
  네, 라, 자, 음, 함, 됨, 임...). A document of several lines none of whose lines ends in punctuation or such an ending
  is menus and navigation (``홈 > 뉴스 > 사회``, ``URL 복사``), not text.
"""

from __future__ import annotations

import re

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from redwhale.core.errors import RedwhaleError
from redwhale.core.scripts import Script, get_script

_RUN = re.compile(r"(.)\1{4,}")  # a character repeated five times or more
# counted by regex substitution (in C): per-character Python loops were most of this filter's time
_SPACE = re.compile(r"\s+")
_SYMBOL = re.compile(r"[^\w\s]|_")  # a visible character that is neither a letter nor a digit
_DIGIT = re.compile(r"\d")


def _count(pattern: re.Pattern, text: str) -> int:
    """Characters of ``text`` matched by a one-character ``pattern``."""
    return len(text) - len(pattern.sub("", text))


# a line that ends a sentence: terminal punctuation, or a Korean predicate ending, before closing quotes/brackets/emoji
_SENTENCE_END = re.compile(
    r"(?:[.!?…。？！~]|[다요죠까니네라자음함됨임지군걸데래며서고])[\s\"'”’)\]}>»」』ㅋㅎㅠㅜ^;:\W]*$"
)


class ScriptFilter(BaseFilter):
    """Keep documents whose letters are mostly of the target script (default: Hangul)."""

    name = "🔤 script share"

    def __init__(
        self,
        script: str = "hangul",
        min_share: float = 0.5,
        lid_model: str | None = None,
        lid_language: str = "ko",
        lid_min_score: float = 0.5,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        self.script: Script = get_script(script)
        self.min_share = min_share
        self.lid_model_path, self.lid_language, self.lid_min_score = lid_model, lid_language, lid_min_score
        self._lid = None

    def _lid_model(self):
        if self._lid is None:
            try:
                import fasttext
            except ImportError:
                raise RedwhaleError("prepare.lid_model needs the fasttext package: pip install fasttext") from None
            self._lid = fasttext.load_model(self.lid_model_path)
        return self._lid

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        share = self.script.share(doc.text)
        doc.metadata["script_share"] = round(share, 3)
        if share < self.min_share:
            return False, "not_target_script"
        if self.lid_model_path:
            labels, scores = self._lid_model().predict(doc.text.replace("\n", " "))
            if labels[0] != f"__label__{self.lid_language}" or scores[0] < self.lid_min_score:
                return False, "language_id"
        return True


def _duplicate_fraction(items: list[str]) -> tuple[float, float]:
    """Share of items that repeat an earlier one, and share of characters in them."""
    seen: set[str] = set()
    dup_count = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup_count += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return (dup_count / len(items) if items else 0.0), (dup_chars / total_chars if total_chars else 0.0)


def duplicate_ngram_fraction(text: str, n: int) -> float:
    """Share of characters (whitespace removed) covered by character n-grams that occur more than once.

    Vectorised (numpy): a rolling hash of every n-gram, repeated hashes found by ``np.unique``, and the characters
    they cover marked through a difference array; a Python loop over n-grams cost seconds per thousand pages."""
    chars = "".join(text.split())
    if len(chars) < 2 * n:
        return 0.0
    codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    count = len(codes) - n + 1
    with np.errstate(over="ignore"):
        grams = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            grams = grams * np.uint64(0x100000001B3) + codes[k : k + count] + np.uint64(1)
    _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts[inverse] > 1)
    marks = np.zeros(len(codes) + 1, dtype=np.int32)
    np.add.at(marks, repeated, 1)
    np.add.at(marks, repeated + n, -1)
    return float(np.count_nonzero(np.cumsum(marks[:-1]))) / len(codes)


class KoreanQualityFilter(BaseFilter):
    """Length, symbol and digit shares, and repetition, with thresholds suited to Korean (see the module doc)."""

    name = "🥇 Korean quality"

    def __init__(
        self,
        min_chars: int = 1,
        max_chars: int = 1_000_000,
        max_symbol_share: float = 0.5,
        max_digit_share: float = 0.5,
        max_duplicate_lines: float = 0.3,
        max_duplicate_line_chars: float = 0.2,
        max_duplicate_paragraphs: float = 0.3,
        ngram_size: int = 10,
        max_duplicate_ngram_chars: float = 0.6,
        max_char_run_share: float = 0.5,
        max_replacement_share: float = 0.001,
        min_sentence_lines: float = 0.1,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        self.max_replacement_share, self.min_sentence_lines = max_replacement_share, min_sentence_lines
        self.min_chars, self.max_chars = min_chars, max_chars
        self.max_symbol_share, self.max_digit_share = max_symbol_share, max_digit_share
        self.max_duplicate_lines, self.max_duplicate_line_chars = max_duplicate_lines, max_duplicate_line_chars
        self.max_duplicate_paragraphs = max_duplicate_paragraphs
        self.ngram_size, self.max_duplicate_ngram_chars = ngram_size, max_duplicate_ngram_chars
        self.max_char_run_share = max_char_run_share

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        length = len(text)
        if length < self.min_chars:
            return False, "too_short"
        if length > self.max_chars:
            return False, "too_long"
        visible = len(_SPACE.sub("", text))
        if visible and text.count("\ufffd") / visible > self.max_replacement_share:
            return False, "undecodable"
        if visible:
            if _count(_SYMBOL, text) / visible > self.max_symbol_share:
                return False, "symbols"
            if _count(_DIGIT, text) / visible > self.max_digit_share:
                return False, "digits"
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) > 1:
            by_count, by_chars = _duplicate_fraction(lines)
            if by_count > self.max_duplicate_lines:
                return False, "duplicate_lines"
            if by_chars > self.max_duplicate_line_chars:
                return False, "duplicate_line_chars"
        if len(lines) >= 3 and sum(1 for line in lines if _SENTENCE_END.search(line)) < self.min_sentence_lines * len(
            lines
        ):
            return False, "no_sentences"
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) > 1 and _duplicate_fraction(paragraphs)[0] > self.max_duplicate_paragraphs:
            return False, "duplicate_paragraphs"
        runs = sum(len(m.group(0)) for m in _RUN.finditer(text))
        if visible and runs / visible > self.max_char_run_share:
            return False, "character_runs"
        if (
            length >= 4 * self.ngram_size
            and duplicate_ngram_fraction(text, self.ngram_size) > self.max_duplicate_ngram_chars
        ):
            return False, "duplicate_ngrams"
        return True
