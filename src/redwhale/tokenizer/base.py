"""What kind of tokenizer a base model has, and the pieces of it a merge needs.

Two kinds are supported, the two that LLM bases use:

* ``bytelevel``: byte-level BPE (GPT-2, Llama-3, Qwen, SmolLM2): a BPE model over the 256 byte symbols, with a
  ``ByteLevel`` pre-tokenizer;
* ``sentencepiece``: SentencePiece BPE with byte fallback (Llama-2, Mistral, SOLAR, Gemma), whose fast twin is a BPE
  model with ``byte_fallback`` and a ``▁`` space marker.

Anything else (WordPiece, Unigram, a BPE without byte coverage) is refused with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from redwhale.core.errors import TokenizerError
from redwhale.core.source import LoadOptions, load_tokenizer

Kind = Literal["bytelevel", "sentencepiece"]
SPACE_MARK = "▁"


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the alphabet of byte-level BPE vocabularies)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


@cache
def unicode_to_byte() -> dict[str, int]:
    return {char: byte for byte, char in byte_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """The raw bytes of a byte-level BPE token string."""
    table = unicode_to_byte()
    return bytes(table[ch] for ch in token)


def bytes_token(data: bytes) -> str:
    """The byte-level BPE string of raw bytes."""
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


@dataclass
class BaseTokenizer:
    """A base tokenizer as the merge sees it: its ``tokenizer.json`` data, kind, and (SentencePiece) model file."""

    folder: Path
    data: dict[str, Any]
    kind: Kind
    sp_model: Path | None = None

    @property
    def vocab(self) -> dict[str, int]:
        return self.data["model"]["vocab"]

    @property
    def merges(self) -> list[tuple[str, str]]:
        return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in self.data["model"]["merges"]]

    @property
    def merges_as_strings(self) -> bool:
        merges = self.data["model"]["merges"]
        return bool(merges) and isinstance(merges[0], str)

    @property
    def added_ids(self) -> dict[str, int]:
        return {t["content"]: t["id"] for t in self.data.get("added_tokens", [])}

    @property
    def size(self) -> int:
        """Number of ids in use (model vocabulary and added tokens), i.e. the id the first new token gets."""
        ids = list(self.vocab.values()) + list(self.added_ids.values())
        return max(ids) + 1 if ids else 0


def _components(node: dict | None, key: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        out: list[dict] = []
        for child in node.get(key, []):
            out.extend(_components(child, key))
        return out
    return [node]


def detect_kind(data: dict[str, Any]) -> Kind:
    """The kind of a ``tokenizer.json``; an unsupported one is a :class:`TokenizerError` that says what it is."""
    model = data.get("model") or {}
    model_type = model.get("type", "?")
    pre = _components(data.get("pre_tokenizer"), "pretokenizers")
    norm = _components(data.get("normalizer"), "normalizers")
    pre_types = {p.get("type") for p in pre}
    if model_type == "BPE" and "ByteLevel" in pre_types:
        return "bytelevel"
    uses_space_mark = "Metaspace" in pre_types or any(
        n.get("type") in ("Replace", "Prepend") and SPACE_MARK in json.dumps(n, ensure_ascii=False) for n in norm
    )
    if model_type == "BPE" and model.get("byte_fallback") and uses_space_mark:
        return "sentencepiece"
    described = f"{model_type} model, pre-tokenizer {sorted(t for t in pre_types if t) or 'none'}"
    raise TokenizerError(
        f"unsupported base tokenizer ({described}): redwhale merges into byte-level BPE (GPT-2, Llama-3, Qwen, "
        "SmolLM2) and SentencePiece BPE with byte fallback (Llama-2, Mistral, SOLAR, Gemma)"
    )


def load_base(spec: str, load: LoadOptions | None = None) -> tuple[Any, BaseTokenizer]:
    """The base's Hugging Face tokenizer and its merge view, from a model spec or a tokenizer folder."""
    hf = load_tokenizer(spec, **(load or LoadOptions()).tokenizer_kwargs())
    backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"{spec}: the tokenizer has no fast (tokenizers) backend to merge into")
    data = json.loads(backend.to_str())
    kind = detect_kind(data)
    vocab_file = getattr(hf, "vocab_file", None)
    folder = Path(getattr(hf, "name_or_path", spec))
    sp_model = None
    if kind == "sentencepiece":
        for candidate in (vocab_file, folder / "tokenizer.model"):
            if candidate and Path(candidate).is_file():
                sp_model = Path(candidate)
                break
    return hf, BaseTokenizer(folder=folder, data=data, kind=kind, sp_model=sp_model)
