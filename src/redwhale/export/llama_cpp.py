"""A real llama.cpp, through llama-cpp-python (the optional extra ``llama``): load an exported file, tokenize,
greedy-decode token ids, and the check that the exporter runs after writing a file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from redwhale.core.errors import missing_extra

log = logging.getLogger(__name__)

CHECK_TEXTS = {
    "Korean": "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. 2024년 3월 1일.",
    "English": "The quick brown fox jumps over the lazy dog; it's 3.14 miles away.\n  def f(x): return x",
}


def open_llama(path: Path, **kwargs):
    """A ``llama_cpp.Llama`` on ``path`` (quiet); llama-cpp-python is the optional extra ``llama``."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise missing_extra("llama-cpp-python", "llama") from None
    return Llama(model_path=str(path), verbose=False, **kwargs)


def llama_tokenize(llm, text: str) -> list[int]:
    """Raw-text ids (no BOS, specials not parsed), as ``tokenizer(text, add_special_tokens=False)``."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def llama_greedy(llm, prompt: list[int], max_new: int) -> list[int]:
    """Greedy continuation by argmax over llama.cpp's logits (needs ``logits_all=True``); no stop token, so the ids
    compare one for one with :func:`hf_greedy`."""
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    while len(out) < max_new:
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if len(out) < max_new:
            llm.eval([out[-1]])
    return out


def hf_greedy(model, prompt: list[int], max_new: int) -> list[int]:
    """Greedy continuation by argmax over transformers' logits with its KV cache: no logits processors (generate()
    would mask EOS under min_new_tokens), so the ids compare one for one with :func:`llama_greedy`."""
    out: list[int] = []
    past, step = None, torch.tensor([prompt])
    with torch.no_grad():
        while len(out) < max_new:
            result = model(step, past_key_values=past, use_cache=True)
            past = result.past_key_values
            out.append(int(result.logits[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def llama_cpp_check(path: Path, tokenizer, texts: dict[str, str] | None = None) -> str | None:
    """Load ``path`` with llama.cpp (vocabulary only) and compare its token ids with the HF tokenizer's; None when
    llama-cpp-python is not installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    try:
        llm = open_llama(path, vocab_only=True)
    except Exception as exc:  # llama_cpp raises ValueError("Failed to load model ...") and friends
        return f"llama.cpp could not load the file: {exc}"
    texts = texts or CHECK_TEXTS
    try:
        for label, text in texts.items():
            ours, hf = llama_tokenize(llm, text), tokenizer(text, add_special_tokens=False).input_ids
            if ours != hf:
                pairs = zip(ours, hf, strict=False)
                at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(ours), len(hf)))
                return f"tokenizer ids differ on the {label} text at token {at} ({len(ours)} vs {len(hf)} ids)"
    finally:
        llm.close()  # free llama.cpp's memory now, not at interpreter exit (where llama-cpp-python can fail)
    return f"tokenizer ids equal on {len(texts)} texts"
