"""Korean text normalisation as a datatrove step: Unicode NFC, mojibake repair, HTML remnants, control and zero-width
characters, stray conjoining jamo, whitespace, boilerplate lines, and the repeats of a page's template lines. Each
change is counted in the step's stats.

Template lines: a page often wraps each of its items in the same site furniture (``이 리뷰가 도움이 되었나요? 공감 ·
신고하기`` after every review). Gopher's repetition rules then drop the page, content and all, because a third of its
lines are repeats. A line that occurs :data:`TEMPLATE_REPEATS` or more times, each time after a different line, is
such furniture: its first occurrence is kept and its repeats removed, and the repetition rules judge what is left.
A line repeated back to back (``A\nA\nA``, the spam the rules exist for) is not a template and stays for them to see.
No library step does this (datatrove's formatters and Gopher filters work per line or per document, not on repeats).
"""

from __future__ import annotations

import html
import re
import unicodedata

import ftfy
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from ftfy.badness import is_bad

# C0/C1 controls except tab and newline; zero-width characters, word joiner, BOM, soft hyphen
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_RUNS = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_TAGS = re.compile(r"</?[A-Za-z][A-Za-z0-9]{0,10}(\s[^<>]{0,200})?/?>")
_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6])\s*/?>", re.IGNORECASE)
_ENTITY = re.compile(r"&(#\d{1,6}|#x[0-9a-fA-F]{1,6}|[A-Za-z]{2,8});")

#: Lines that are site furniture, not text (Korean news and portal boilerplate).
BOILERPLATE = re.compile(
    r"^\s*(?:"
    r".*무단\s*전재.*(?:배포|금지).*"
    r"|.*(?:ⓒ|©|\(c\)|Copyright).{0,60}(?:All rights reserved|무단|저작권).*"
    r"|(?:저작권자|기사제보|보도자료|구독하기|네이버 메인에서|카카오톡 채널|페이스북 공유|트위터 공유).{0,60}"
    r"|[▶▷☞※►].{0,40}(?:바로가기|더보기|클릭|구독|다운로드).*"
    r"|(?:로그인|회원가입|이용약관|개인정보처리방침|고객센터)(?:\s*[|·/]\s*(?:로그인|회원가입|이용약관|개인정보처리방침|고객센터))+\s*"
    r")\s*$",
    re.IGNORECASE,
)

# Modern conjoining jamo -> compatibility jamo (choseong, jungseong, jongseong), for jamo that NFC leaves alone
_CHOSEONG = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_JUNGSEONG = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_JONGSEONG = "ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ"
JAMO_TO_COMPAT = {
    **{0x1100 + i: c for i, c in enumerate(_CHOSEONG)},
    **{0x1161 + i: c for i, c in enumerate(_JUNGSEONG)},
    **{0x11A8 + i: c for i, c in enumerate(_JONGSEONG)},
}
_STRAY_JAMO = re.compile("[\u1100-\u1112\u1161-\u1175\u11a8-\u11c2]")

#: A line occurring this many times, each after a different line, is a template line (see the module doc).
TEMPLATE_REPEATS = 3


def strip_template_lines(lines: list[str]) -> list[str]:
    """``lines`` without the repeats of their template lines (the first occurrence stays; blank lines are ignored)."""
    counts: dict[str, int] = {}
    for line in lines:
        if line:
            counts[line] = counts.get(line, 0) + 1
    if not counts or max(counts.values()) < TEMPLATE_REPEATS:
        return lines
    interleaved: dict[str, int] = {}  # occurrences that follow a different non-blank line (or start the text)
    previous = None
    for line in lines:
        if line:
            if counts[line] >= TEMPLATE_REPEATS and line != previous:
                interleaved[line] = interleaved.get(line, 0) + 1
            previous = line
    template = {line for line, n in interleaved.items() if n >= TEMPLATE_REPEATS}
    if not template:
        return lines
    out, seen, previous = [], set(), None
    for line in lines:
        if line in template and line in seen and line != previous:
            continue  # a repeat of a template line after other text; back-to-back repeats stay
        seen.add(line)
        out.append(line)
        previous = line if line else previous
    return out


def normalize_text(
    text: str,
    counts: dict[str, int] | None = None,
    fix_mojibake: bool = True,
    strip_html: bool = True,
    remove_boilerplate: bool = True,
    remove_template_lines: bool = True,
) -> str:
    """Normalise one text; ``counts`` (if given) receives the number of documents each change touched."""

    def hit(key: str) -> None:
        if counts is not None:
            counts[key] = counts.get(key, 0) + 1

    if fix_mojibake and is_bad(text):  # cheap detector first: ftfy's full repair is slow and most text is fine
        # the encoding repair only: fix_text would also uncurl quotes and narrow full-width characters
        fixed = ftfy.fix_encoding(text)
        if fixed != text:
            text = fixed
            hit("mojibake_fixed")
    normalized = unicodedata.normalize("NFC", text)
    if normalized != text:
        text = normalized
        hit("nfc_changed")
    if strip_html and ("<" in text or "&" in text):
        cleaned = _BREAKS.sub("\n", text)
        cleaned = _TAGS.sub(" ", cleaned)
        cleaned = _ENTITY.sub(lambda m: html.unescape(m.group(0)), cleaned)
        if cleaned != text:
            text = cleaned
            hit("html_cleaned")
    cleaned = _CONTROLS.sub("", text)
    if cleaned != text:
        text = cleaned
        hit("controls_removed")
    if _STRAY_JAMO.search(text):
        text = _STRAY_JAMO.sub(lambda m: JAMO_TO_COMPAT[ord(m.group(0))], text)
        hit("stray_jamo_mapped")
    text = _SPACES.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_RUNS.sub(" ", line).strip() for line in text.split("\n")]
    if remove_boilerplate:
        kept = [line for line in lines if not (line and BOILERPLATE.match(line))]
        if len(kept) != len(lines):
            hit("boilerplate_lines_removed")
        lines = kept
    if remove_template_lines:
        kept = strip_template_lines(lines)
        if len(kept) != len(lines):
            hit("template_lines_removed")
        lines = kept
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class KoreanNormalizer(PipelineStep):
    """Normalises every document's text; a document left empty is dropped (``dropped_empty_after_normalisation``)."""

    type = "🧹 - NORMALISE"
    name = "🇰🇷 Korean normaliser"

    def __init__(
        self,
        fix_mojibake: bool = True,
        strip_html: bool = True,
        remove_boilerplate: bool = True,
        remove_template_lines: bool = True,
    ):
        super().__init__()
        self.fix_mojibake, self.strip_html, self.remove_boilerplate = fix_mojibake, strip_html, remove_boilerplate
        self.remove_template_lines = remove_template_lines

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for document in data:
            with self.track_time():
                counts: dict[str, int] = {}
                document.text = normalize_text(
                    document.text,
                    counts,
                    self.fix_mojibake,
                    self.strip_html,
                    self.remove_boilerplate,
                    self.remove_template_lines,
                )
                self.stat_update("total")
                for key in counts:
                    self.stat_update(key)
                if not document.text:
                    self.stat_update("dropped", "dropped_empty_after_normalisation")
                    continue
                self.stat_update("forwarded")
            yield document
