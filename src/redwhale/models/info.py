"""A short description of a model spec: what it resolves to, its architecture, size and tokenizer."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from safetensors import safe_open
from transformers import AutoConfig

from redwhale.core.source import load_tokenizer, materialize, resolve


def safetensors_tensors(folder: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Every tensor of a folder's ``*.safetensors`` files: name -> (shape, file), read from the headers only."""
    tensors: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                tensors[key] = (tuple(handle.get_slice(key).get_shape()), file)
    return tensors


def count_safetensors_params(folder: Path) -> int | None:
    """Parameters stored in a folder's safetensors files, read from their headers (no weights are loaded)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def model_info(spec: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Resolve, materialise and describe a model without loading its weights."""

    source = resolve(spec)
    target = materialize(source, cache_dir)
    config = AutoConfig.from_pretrained(target)
    tokenizer = load_tokenizer(spec, cache_dir=cache_dir)
    params = count_safetensors_params(Path(target)) if Path(target).is_dir() else None
    return {
        "source": source.describe(),
        "loads from": target,
        "architecture": ",".join(config.architectures or [config.model_type]),
        "layers": getattr(config, "num_hidden_layers", "?"),
        "hidden size": getattr(config, "hidden_size", "?"),
        "vocab size (model)": getattr(config, "vocab_size", "?"),
        "tied embeddings": getattr(config, "tie_word_embeddings", "?"),
        "parameters": f"{params:,}" if params else "unknown (not a local safetensors folder)",
        "tokenizer": f"{type(tokenizer).__name__}, {len(tokenizer):,} tokens",
    }
