"""Merging the trained model back toward the weights training started from (``train.merge_with_base``).

After the last stage every trained weight becomes ``(1 - w) * trained + w * start``, where ``start`` is the model
the schedule began from (the extended model, or the base for plain continual pretraining). Linear interpolation
between a fine-tuned model and its starting point keeps most of what training learned while giving back most of
what it forgot: WiSE-FT (Wortsman et al. 2022, arXiv 2109.01903) for fine-tuning, Branch-and-Merge (Alexandrov et
al. 2024, arXiv 2407.08699) for continual pretraining on a new language. The new vocabulary rows are the
exception: they have nothing to forget (their starting point is an initialisation, not knowledge), so they keep
their trained values.

Written by hand: mergekit merges saved checkpoints on disk, and this runs on the model in memory at the end of
training, streaming the starting weights one tensor at a time from their safetensors files (no second model in
memory, whatever its size).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from redwhale.core.errors import ConfigError
from redwhale.models.info import safetensors_tensors

log = logging.getLogger(__name__)


def safetensors_index(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it; no safetensors weights is a config error (nothing to merge
    toward)."""
    tensors = safetensors_tensors(model_dir)
    if not tensors:
        raise ConfigError(
            f"train.merge_with_base: {model_dir} has no safetensors weights to merge toward (save the model with "
            "save_pretrained, or set merge_with_base: 0)"
        )
    return {name: file for name, (_, file) in tensors.items()}


@torch.no_grad()
def merge_with_start(model: torch.nn.Module, start_dir: Path, weight: float, base_rows: int) -> dict[str, int]:
    """Move every parameter of ``model`` a share ``weight`` of the way back to its value in ``start_dir``, in place;
    rows from ``base_rows`` on of the input embeddings and of an untied LM head (the new tokens) are left as trained.
    Returns counts of what was merged."""
    if not 0 <= weight < 1:
        raise ValueError(f"merge weight must be in [0, 1), got {weight}")
    index = safetensors_index(Path(start_dir))
    embeddings = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    head_weight = head.weight if head is not None else None
    embedding_name = next(n for n, p in model.named_parameters() if p is embeddings)
    handles: dict[Path, object] = {}
    counts = {"tensors": 0, "parameters": 0, "kept_new_rows": 0}
    with ExitStack() as opened:
        for name, param in model.named_parameters():
            source = name if name in index else None
            if source is None and param is head_weight and embedding_name in index:
                source = embedding_name  # the start was tied: its head is its embedding matrix
            if source is None:
                raise ConfigError(
                    f"train.merge_with_base: {name} is not in {start_dir}: the model trained is not the one saved "
                    "there (set merge_with_base: 0)"
                )
            file = index[source]
            if file not in handles:
                handles[file] = opened.enter_context(safe_open(str(file), framework="pt"))
            start = handles[file].get_tensor(source).to(device=param.device, dtype=torch.float32)
            rows = param.shape[0]
            if (param is embeddings or param is head_weight) and rows > base_rows:
                if start.shape[0] != rows:
                    raise ConfigError(f"train.merge_with_base: {name} has {rows} rows, {start_dir} {start.shape[0]}")
                start, counts["kept_new_rows"] = start[:base_rows], counts["kept_new_rows"] + rows - base_rows
                target = param.data[:base_rows]
            else:
                if start.shape != param.shape:
                    raise ConfigError(
                        f"train.merge_with_base: {name} is {tuple(param.shape)}, {start_dir} has {tuple(start.shape)}"
                    )
                target = param.data
            merged = target.float().lerp_(start, weight)  # trained + weight * (start - trained)
            target.copy_(merged.to(target.dtype))
            counts["tensors"] += 1
            counts["parameters"] += target.numel()
    log.info(
        "merged %d tensors (%s parameters) %.0f%% of the way back to %s; %d new rows kept as trained",
        counts["tensors"],
        f"{counts['parameters']:,}",
        100 * weight,
        start_dir,
        counts["kept_new_rows"],
    )
    return counts
