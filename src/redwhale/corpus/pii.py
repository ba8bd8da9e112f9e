"""Masking personal data in Korean text with typed placeholders, as a datatrove step.

Patterns (each validated beyond its shape, to spare dates, prices and version numbers):

* resident registration numbers (주민등록번호): ``YYMMDD-GXXXXXX`` with a real month and day and a gender digit 1-8;
* phone numbers: mobile ``01X``, area codes ``02`` and ``0[3-6][1-5]``, ``070``, and ``+82`` forms, with separators;
* e-mail addresses;
* account-like numbers: three or four hyphen-separated digit groups with 10-16 digits in all (bank accounts,
  card-like numbers), which leaves ``2019-04-15`` and ``1,000,000원`` alone;
* IPv4 addresses (each part 0-255), not inside longer dotted numbers.
"""

from __future__ import annotations

import re
from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

PLACEHOLDERS = {
    "rrn": "[주민번호]",
    "phone": "[전화번호]",
    "email": "[이메일]",
    "account": "[계좌번호]",
    "ip": "[IP주소]",
}

_RRN = re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-\s?[1-8]\d{6}(?!\d)")
_PHONE = re.compile(
    r"(?<![\d-])(?:(?:\+82[-\s]?(?:0?1[016789]|0?2|0?[3-6][1-5]|0?70)|01[016789]|02|0[3-6][1-5]|070)"
    r"[-\s.)]\s?\d{3,4}[-\s.]\d{4}|01[016789]\d{7,8})(?![\d-])"
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,24}(?![\w-])")
_ACCOUNT = re.compile(r"(?<![\d-])\d{2,6}-\d{2,6}-\d{2,8}(?:-\d{1,6})?(?![\d-])")
_IP = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")


def _account(match: re.Match) -> bool:
    digits = sum(c.isdigit() for c in match.group(0))
    return 10 <= digits <= 16


def mask_pii(text: str) -> tuple[str, Counter]:
    """The text with personal data replaced by typed placeholders, and the count of each type."""
    counts: Counter = Counter()
    for kind, pattern, check in (
        ("rrn", _RRN, None),
        ("email", _EMAIL, None),
        ("phone", _PHONE, None),
        ("ip", _IP, None),
        ("account", _ACCOUNT, _account),
    ):
        if kind in ("rrn", "phone", "account", "ip") and not any(c.isdigit() for c in text):
            continue
        if kind == "email" and "@" not in text:
            continue

        def replace(match: re.Match, kind=kind, check=check) -> str:
            if check is not None and not check(match):
                return match.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts


class PIIMasker(PipelineStep):
    """Replaces personal data with typed placeholders; counts are in the stats (``masked_<type>``) and in each
    document's metadata (``pii``)."""

    type = "🔒 - PII"
    name = "🔒 Korean PII masking"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for document in data:
            with self.track_time():
                document.text, counts = mask_pii(document.text)
                self.stat_update("total")
                if counts:
                    document.metadata["pii"] = dict(counts)
                    self.stat_update("documents_with_pii")
                    for kind, n in counts.items():
                        self.stat_update(f"masked_{kind}", value=n)
            yield document
