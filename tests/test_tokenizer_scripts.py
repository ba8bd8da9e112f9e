"""Script membership from characters and from raw UTF-8 bytes (partial characters included)."""

import pytest

from redwhale.core.scripts import SCRIPTS, get_script

HANGUL = SCRIPTS["hangul"]


@pytest.mark.parametrize(
    ("data", "proven"),
    [
        ("한".encode(), True),
        ("ㅋ".encode(), True),  # compatibility jamo
        ("ᄀ".encode(), True),  # conjoining jamo
        (b"\xec", True),  # lead byte of U+C000..U+CFFF: all syllables
        (b"\xea", False),  # U+A000..U+AFFF also holds Yi and Vai
        (b"\xea\xb0", True),  # U+AC00..U+AC3F
        (b"\xe3\x84", False),  # U+3100..U+313F also holds Bopomofo
        (b"\xe3\x84\xb1", True),  # U+3131 (ㄱ)
        (b"\x95\x9c", False),  # continuation bytes alone prove nothing
        (b" \xec\xa7", True),
        ("中".encode(), False),
        (b"hello", False),
        (b"\xec\x41", False),  # a broken sequence is not a character
    ],
)
def test_bytes_prove_hangul(data, proven):
    assert HANGUL.proven_by_bytes(data) is proven


def test_text_membership_and_share():
    assert HANGUL.in_text("GPT가 좋다") and not HANGUL.in_text("GPT is good")
    assert HANGUL.in_text("abc한", 3) and not HANGUL.in_text("abc한", 0, 3)
    assert HANGUL.share("한국 abc") == pytest.approx(2 / 5)


def test_unknown_script_is_a_clear_error():
    with pytest.raises(ValueError, match="known: "):
        get_script("klingon")


def test_other_scripts_prove_themselves():
    assert SCRIPTS["cyrillic"].proven_by_bytes("Ж".encode())
    assert not SCRIPTS["cyrillic"].proven_by_bytes("Ж".encode()[:1] + b"a")
    assert SCRIPTS["thai"].proven_by_bytes("ก".encode())
