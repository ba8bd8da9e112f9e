"""Writing systems, and the test that keeps a merged tokenizer lossless for every other language.

A new token may only be added if its bytes *prove* that the text it matches contains a character of the target
script. Then a text without such a character can never fire a new merge, so it tokenises exactly as with the base
(English, code, numbers, and any other script). For a byte-level token this is decided on raw UTF-8 bytes, which may
hold partial characters: ``EC`` alone is the lead byte of U+C000..U+CFFF, all Hangul syllables, so it proves Hangul;
``EA`` alone does not (U+A000..U+AFFF also holds Yi and Vai), but ``EA B0`` does (U+AC00..U+AC3F).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

_NOT_LETTER = re.compile(r"[\W\d_]+")


@dataclass(frozen=True)
class Script:
    """A writing system as a list of inclusive code point ranges."""

    name: str
    ranges: tuple[tuple[int, int], ...]

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """A regex matching one character of the script."""
        return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in self.ranges) + "]")

    def contains(self, codepoint: int) -> bool:
        return any(lo <= codepoint <= hi for lo, hi in self.ranges)

    def covers(self, lo: int, hi: int) -> bool:
        """True if every valid scalar value in ``[lo, hi]`` belongs to the script (surrogates are never valid)."""
        parts = [(lo, min(hi, 0xD7FF)), (max(lo, 0xE000), hi)] if lo <= 0xDFFF and hi >= 0xD800 else [(lo, hi)]
        parts = [(a, b) for a, b in parts if a <= b]
        return bool(parts) and all(any(r0 <= a and b <= r1 for r0, r1 in self.ranges) for a, b in parts)

    def in_text(self, text: str, start: int = 0, end: int | None = None) -> bool:
        """True if ``text[start:end]`` holds at least one character of the script."""
        return self.pattern.search(text, start, len(text) if end is None else end) is not None

    def share(self, text: str) -> float:
        """Share of the script among the letters of ``text`` (0 when there are none). Letters are word characters
        other than digits and ``_`` (``[^\\W\\d_]``); both counts are regex substitutions, in C, because a Python
        loop over characters was the slowest step of the corpus pipeline."""
        letters = len(_NOT_LETTER.sub("", text))
        if not letters:
            return 0.0
        return min(1.0, (len(text) - len(self.pattern.sub("", text))) / letters)

    def proven_by_bytes(self, data: bytes) -> bool:
        """True if any character that these UTF-8 bytes (possibly cut at either end) start is surely in the script.

        For each lead byte, the known continuation bytes after it pin the code point to a range; the bytes prove the
        script when that range lies inside it.
        """
        n = len(data)
        for i, lead in enumerate(data):
            if lead < 0xC2 or lead > 0xF4:
                continue  # ASCII or a continuation byte: no character starts here
            length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            value = lead & (0x1F if length == 2 else 0x0F if length == 3 else 0x07)
            known = 0
            for j in range(1, length):
                if i + j < n and 0x80 <= data[i + j] <= 0xBF:
                    value = (value << 6) | (data[i + j] & 0x3F)
                    known += 1
                else:
                    break
            if i + 1 + known < n and known < length - 1:
                continue  # the sequence is broken inside the token: not a character
            missing = length - 1 - known
            lo = value << (6 * missing)
            hi = lo | ((1 << (6 * missing)) - 1)
            if self.covers(lo, hi):
                return True
        return False


SCRIPTS: dict[str, Script] = {
    # Unicode blocks (unassigned points inside a block will never belong to another script): Hangul Jamo, Hangul
    # Compatibility Jamo, Jamo Extended-A, Hangul Syllables + Jamo Extended-B.
    "hangul": Script("hangul", ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF))),
    "thai": Script("thai", ((0x0E00, 0x0E7F),)),
    "devanagari": Script("devanagari", ((0x0900, 0x097F), (0xA8E0, 0xA8FF))),
    "arabic": Script("arabic", ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF))),
    "cyrillic": Script("cyrillic", ((0x0400, 0x052F),)),
    "greek": Script("greek", ((0x0370, 0x03FF),)),
    "hebrew": Script("hebrew", ((0x0590, 0x05FF),)),
    "kana": Script("kana", ((0x3040, 0x30FF),)),
}


def get_script(name: str) -> Script:
    try:
        return SCRIPTS[name]
    except KeyError:
        raise ValueError(f"unknown script {name!r}; known: {', '.join(sorted(SCRIPTS))}") from None
