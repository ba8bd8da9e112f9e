"""``redwhale model chat-vector``: bring instruction following back to an adapted base (Chat Vector, Huang et al. 2023).

Contract: ``apply_chat_vector(base, instruct, adapted, out, scale)`` writes the Hugging Face folder ``out`` (atomically)
with ``adapted + scale * (instruct - base)`` on every weight present in all three. The base and the instruct model
must have the same architecture and shapes; the adapted model must have the base's shapes, except the embedding and
an untied LM head, which may have more rows (the grown vocabulary): their first ``base_vocab`` rows get the
difference and the new rows (ids >= base vocab) are left exactly as in ``adapted``, since the instruct model never
learned anything about them. A tied model holds one matrix for embedding and head, so the difference is applied once.
Tokenizer files come from ``adapted``; ``out/chat_vector.json`` records what was done.

All arithmetic is in float32; the output keeps the adapted model's dtype. Memory: the three models in float32.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from redwhale.core.errors import ModelSourceError
from redwhale.core.io import atomic_dir, atomic_write_json
from redwhale.core.source import LoadOptions, load_model, load_tokenizer

#: Tokenizer files copied from the adapted model (the merged tokenizer), whichever it has.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
#: config fields that must agree between the three models (the vocabulary size may differ for ``adapted``).
SHAPE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


def apply_chat_vector(
    base_spec: str,
    instruct_spec: str,
    adapted_dir: Path,
    out: Path,
    scale: float = 1.0,
    load: LoadOptions | None = None,
) -> dict:
    """See the module docstring; returns {"out", "scale", "tensors", "new_rows", "seconds", "note"}."""
    load = load or LoadOptions()
    started = time.perf_counter()
    adapted_dir = Path(adapted_dir)
    kwargs = load.model_kwargs(dtype="float32")
    base, instruct = load_model(base_spec, **kwargs), load_model(instruct_spec, **kwargs)
    adapted = load_model(str(adapted_dir), **kwargs)
    _check_configs(base.config, instruct.config, adapted.config, base_spec, instruct_spec)
    base_vocab = base.get_input_embeddings().weight.shape[0]
    _check_vocab(base_spec, adapted_dir, base_vocab, load)
    changed = add_difference(base, instruct, adapted, scale)
    new_rows = adapted.get_input_embeddings().weight.shape[0] - base_vocab
    tied = bool(adapted.config.tie_word_embeddings)
    note = (
        f"{len(changed)} tensors moved by {scale:g} x (instruct - base); "
        f"{new_rows} new vocabulary rows kept as adapted"
        + ("; tied head moved once with the embedding" if tied else "")
    )
    if tied and not base.config.tie_word_embeddings:
        note += "; the base's separate head difference is dropped (the adapted model ties its head)"
    record = {
        "base": str(base_spec),
        "instruct": str(instruct_spec),
        "adapted": str(adapted_dir),
        "scale": scale,
        "base_vocab": base_vocab,
        "adapted_vocab": adapted.get_input_embeddings().weight.shape[0],
        "tied": tied,
        "changed": changed,
        "note": note,
    }
    _save(adapted, adapted_dir, Path(out), record, _saved_dtype(adapted_dir))
    return {
        "out": str(out),
        "scale": scale,
        "tensors": len(changed),
        "new_rows": new_rows,
        "seconds": round(time.perf_counter() - started, 2),
        "note": note,
    }


def _check_configs(base, instruct, adapted, base_spec: str, instruct_spec: str) -> None:
    for field in SHAPE_FIELDS:
        values = [getattr(config, field, None) for config in (base, instruct, adapted)]
        if len(set(values)) > 1:
            raise ModelSourceError(
                f"chat vector: {field} differs (base {values[0]}, instruct {values[1]}, adapted {values[2]}): "
                f"{instruct_spec} and the adapted model must both come from {base_spec}"
            )


def _check_vocab(base_spec: str, adapted_dir: Path, base_vocab: int, load: LoadOptions) -> None:
    """The adapted tokenizer must keep every base id (the merge guarantees it), else row i would not mean token i."""
    base_tok = load_tokenizer(base_spec, **load.tokenizer_kwargs())
    adapted_tok = load_tokenizer(str(adapted_dir), **load.tokenizer_kwargs())
    mine = adapted_tok.get_vocab()
    moved = [t for t, i in base_tok.get_vocab().items() if i < base_vocab and mine.get(t) != i]
    if moved:
        raise ModelSourceError(
            f"chat vector: the adapted tokenizer changes {len(moved)} base ids (e.g. {moved[0]!r}); "
            "it must extend the base's vocabulary without renumbering it"
        )


def add_difference(base, instruct, adapted, scale: float) -> list[str]:
    """Add ``scale * (instruct - base)`` to the adapted model's parameters in place; returns the names changed.
    ``named_parameters`` lists a tied matrix once, so it moves once."""
    base_sd, instruct_sd = base.state_dict(), instruct.state_dict()
    missing = sorted(set(base_sd) - set(adapted.state_dict()))
    if missing:
        raise ModelSourceError(f"chat vector: the adapted model lacks {missing[0]} (and {len(missing) - 1} more)")
    changed = []
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if name not in base_sd or name not in instruct_sd:
                raise ModelSourceError(f"chat vector: {name} is in the adapted model but not in base and instruct")
            b, i = base_sd[name].to(torch.float32), instruct_sd[name].to(torch.float32)
            if b.shape != i.shape:
                raise ModelSourceError(f"chat vector: {name} is {tuple(b.shape)} in base, {tuple(i.shape)} in instruct")
            if param.shape == b.shape:
                param += scale * (i - b)
            else:
                param[: _base_rows(name, tuple(param.shape), tuple(b.shape))] += scale * (i - b)
            changed.append(name)
    return changed


def _base_rows(name: str, adapted: tuple[int, ...], base: tuple[int, ...]) -> int:
    """The base's rows of a grown embedding or head (the new rows after them get no difference); else a mismatch."""
    grown = len(adapted) == 2 and adapted[1:] == base[1:] and adapted[0] > base[0]
    if grown and ("embed" in name or "lm_head" in name):
        return base[0]
    raise ModelSourceError(f"chat vector: {name} is {adapted} in the adapted model but {base} in the base")


def _saved_dtype(folder: Path) -> torch.dtype:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name, torch.float32)


def _save(model, adapted_dir: Path, out: Path, record: dict[str, Any], dtype: torch.dtype) -> None:
    with atomic_dir(out) as tmp:
        model.to(dtype).save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (adapted_dir / name).is_file():
                shutil.copy2(adapted_dir / name, tmp / name)
        atomic_write_json(tmp / "chat_vector.json", record)
