"""The guarantees of a merged tokenizer, checked rather than assumed.

* every base token keeps its id;
* text without the target script tokenises exactly as with the base (built-in probes: English, code, numbers, other
  scripts, emoji; plus any texts given);
* ``decode(encode(x)) == x`` for Korean, English, mixed text, emoji, Hanja and jamo (plus any texts given), for
  every text that the base itself round-trips;
* no added token is dead: each one has a witness text in which the merged tokenizer emits it. A token that is whole
  characters is its own witness; a token holding part of a character (byte-level BPE builds characters from byte
  pairs) is tried inside every character of the script that it could belong to.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from redwhale.core.scripts import Script
from redwhale.tokenizer.base import token_bytes
from redwhale.tokenizer.samples import NON_TARGET, ROUND_TRIP

MAX_EXAMPLES = 5
SP_CONTEXTS = ("", "1", "a", ".", "(", "ㄱ")


def audit(base_hf, merged, script: Script, texts: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Check every guarantee; returns counts and a few examples of each failure."""
    texts = texts or {}
    backend = merged.backend()
    base_backend = base_hf.backend_tokenizer
    result: dict[str, Any] = {}

    mismatched = [t for t, i in _base_ids(base_backend).items() if backend.token_to_id(t) != i]
    result["base_ids_unchanged"] = not mismatched
    result["base_ids_changed_examples"] = mismatched[:MAX_EXAMPLES]

    probes = NON_TARGET + [t for t in texts.get("english", []) if not script.in_text(t)]
    changed = [t for t, a, b in zip(probes, _ids(base_backend, probes), _ids(backend, probes), strict=True) if a != b]
    result["non_target_texts"] = len(probes)
    result["non_target_identical"] = 1.0 - len(changed) / max(len(probes), 1)
    result["non_target_changed_examples"] = [t[:80] for t in changed[:MAX_EXAMPLES]]

    # A text the base itself cannot round-trip (a SentencePiece base drops a leading space) is not held against the
    # merge; those are reported apart.
    samples = ROUND_TRIP + list(texts.get("korean", [])) + list(texts.get("english", []))
    base_decoded = base_backend.decode_batch(_ids(base_backend, samples), skip_special_tokens=False)
    base_broken = {t for t, d in zip(samples, base_decoded, strict=True) if d != t}
    checked = [t for t in samples if t not in base_broken]
    decoded = backend.decode_batch(_ids(backend, checked), skip_special_tokens=False)
    broken = [t for t, d in zip(checked, decoded, strict=True) if d != t]
    result["round_trip_texts"] = len(checked)
    result["round_trip"] = 1.0 - len(broken) / max(len(checked), 1)
    result["round_trip_broken_examples"] = [t[:80] for t in broken[:MAX_EXAMPLES]]
    result["base_round_trip_broken"] = len(base_broken)

    dead = dead_tokens(backend, merged, script)
    result["dead_tokens"] = len(dead)
    result["dead_examples"] = dead[:MAX_EXAMPLES]
    return result


def _base_ids(backend) -> dict[str, int]:
    return backend.get_vocab(with_added_tokens=True)


def _ids(backend, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)] if texts else []


def dead_tokens(backend, merged, script: Script) -> list[str]:
    """Added tokens for which no witness text makes the merged tokenizer emit them."""
    kind = "sentencepiece" if merged.sp_proto is not None or _is_sentencepiece(merged.data) else "bytelevel"
    ids = {token: merged.base_size + i for i, token in enumerate(merged.added)}
    witnesses: list[tuple[str, str]] = []
    for token in merged.added:
        for text in _witnesses(token, kind, script):
            witnesses.append((token, text))
    alive: set[str] = set()
    batch = 2048
    for start in range(0, len(witnesses), batch):
        chunk = witnesses[start : start + batch]
        for (token, _), encoding in zip(
            chunk, backend.encode_batch([t for _, t in chunk], add_special_tokens=False), strict=True
        ):
            if ids[token] in encoding.ids:
                alive.add(token)
    return [token for token in merged.added if token not in alive]


def _is_sentencepiece(data: dict) -> bool:
    return bool(data.get("model", {}).get("byte_fallback"))


def _witnesses(token: str, kind: str, script: Script) -> Iterable[str]:
    if kind == "sentencepiece":
        text = token.replace("▁", " ")
        starts_word = text.startswith(" ")
        for context in SP_CONTEXTS:
            yield (context + text) if not starts_word or context else text.lstrip(" ")
        return
    data = token_bytes(token)
    try:
        yield data.decode("utf-8")
        return
    except UnicodeDecodeError:
        pass
    yield from _completions(data, script)


def _completions(data: bytes, script: Script, limit: int = 256) -> Iterable[str]:
    """Texts in which ``data`` (UTF-8 cut inside characters at either end) appears, completed with characters of
    the script."""
    head = 0
    while head < len(data) and 0x80 <= data[head] <= 0xBF:
        head += 1
    prefixes = _chars_ending_with(data[:head], script, limit) if head else [b""]
    body = data[head:]
    suffixes = _chars_starting_with_tail(body, script, limit)
    if suffixes is None:
        return
    count = 0
    for prefix in prefixes:
        for tail, suffix in suffixes:
            candidate = prefix + body[: len(body) - tail] + suffix
            try:
                yield candidate.decode("utf-8")
            except UnicodeDecodeError:
                continue
            count += 1
            if count >= limit:
                return


def _chars_ending_with(cont: bytes, script: Script, limit: int) -> list[bytes]:
    found = [e for e in _encoded(script.ranges) if len(e) > len(cont) and e.endswith(cont)]
    return [f[: len(f) - len(cont)] for f in _spread(found, limit)]


@lru_cache(maxsize=16)
def _encoded(ranges: tuple[tuple[int, int], ...]) -> list[bytes]:
    """Every character of the script, UTF-8 encoded: encoded once, not for every partial character asked about (at
    80,000 new tokens, encoding the Hangul block again for each was 1.3 s of the dead-token check's 2.3 s)."""
    return [e for lo, hi in ranges for cp in range(lo, hi + 1) if (e := chr(cp).encode("utf-8", errors="ignore"))]


def _chars_starting_with_tail(body: bytes, script: Script, limit: int) -> list[tuple[int, bytes]] | None:
    """For a trailing incomplete character in ``body``: (its length, full characters that start with it)."""
    if not body:
        return [(0, b"")]
    for start in range(len(body) - 1, max(len(body) - 4, -1), -1):
        lead = body[start]
        if lead >= 0xC0:
            need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            partial = body[start:]
            if len(partial) >= need:
                return [(0, b"")]
            found = [e for e in _encoded(script.ranges) if e.startswith(partial)]
            return [(len(partial), f) for f in _spread(found, limit)] or None
        if lead < 0x80:
            return [(0, b"")]
    return [(0, b"")]


def _spread(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
