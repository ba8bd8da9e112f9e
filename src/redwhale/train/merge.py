"""Merging the trained model back toward the weights training started from (``train.merge_with_base``).

After the last stage every trained weight becomes ``(1 - w) * trained + w * start``, where ``start`` is the model
the schedule began from (the extended model, or the base for plain continual pretraining). Linear interpolation
between a fine-tuned model and its starting point keeps most of what training learned while giving back most of
what it forgot: WiSE-FT (Wortsman et al. 2022, arXiv 2109.01903) for fine-tuning, Branch-and-Merge (Alexandrov et
al. 2024, arXiv 2407.08699) for continual pretraining on a new language. The new vocabulary rows are the
exception: they have nothing to forget (their starting point is an initialisation, not knowledge), so they keep
their trained values.

``merge_with_base: auto`` (the default) chooses the weight: English bits per byte are measured on held-out English
(disjoint from what evaluation scores) before training and after, and the model is merged back by the least of
0.1 ... 0.9 that brings English within ``train.english_tolerance`` of the base model's (:func:`merge_within_tolerance`).
For an extended model the base's figure is the start's with the new rows left out of the softmax (the extension
leaves the base rows as they were, so this *is* the base model, up to rows a base pads its vocabulary with beyond its
tokenizer, which the new tokens fill), so the English the new vocabulary itself costs at init (~0.35% on SmolLM2 at
80k new tokens) counts against the tolerance: the user's 3% is against the model they started with, not against its
extension. The start's own figure is the reference when the check text holds new tokens, or when the start was
trained since its extension (its base rows are no longer the base's).

Written by hand: mergekit merges saved checkpoints on disk, and this runs on the model in memory at the end of
training, streaming the starting weights one tensor at a time from their safetensors files (no second model in
memory, whatever its size).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

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
def merge_with_start(
    model: torch.nn.Module, start_dir: Path, weight: float, base_rows: int, quiet: bool = False
) -> dict[str, int]:
    """Move every parameter of ``model`` a share ``weight`` of the way back to its value in ``start_dir``, in place;
    rows from ``base_rows`` on of the input embeddings and of an untied LM head (the new tokens) are left as trained.
    Returns counts of what was merged (logged unless ``quiet``)."""
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
    (log.debug if quiet else log.info)(
        "merged %d tensors (%s parameters) %.0f%% of the way back to %s; %d new rows kept as trained",
        counts["tensors"],
        f"{counts['parameters']:,}",
        100 * weight,
        start_dir,
        counts["kept_new_rows"],
    )
    return counts


AUTO_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def merge_within_tolerance(
    model: torch.nn.Module,
    start_dir: Path,
    base_rows: int,
    english_bpb: Callable[[], float],
    reference_bpb: float,
    tolerance: float,
    weights: Sequence[float] = AUTO_WEIGHTS,
    reference: str = "the start",
) -> dict[str, Any]:
    """``train.merge_with_base: auto``: merge ``model`` back toward ``start_dir`` by the smallest of ``weights`` at
    which its English bits per byte (``english_bpb()``, on held-out text) is within ``tolerance`` of ``reference_bpb``
    (``reference``'s, on the same text: the base model's, or the start's); none when the trained model already is, the
    largest when none is. The model is left merged at the weight chosen. ``searched`` gives each weight tried, its
    English and the seconds it took (its merge and measurement), ``seconds`` the whole search's. Each weight is reached
    from the last by one more merge (merging a model merged at ``a`` a further share ``s`` back gives
    ``1 - (1 - a)(1 - s)``), so the search holds one model in memory."""
    limit = reference_bpb * (1 + tolerance)
    started = time.perf_counter()
    searched = [{"weight": 0.0, "english_bpb": english_bpb(), "seconds": time.perf_counter() - started}]
    applied, counts = 0.0, None
    for weight in sorted(weights):
        if searched[-1]["english_bpb"] <= limit:
            break
        step = time.perf_counter()
        counts = merge_with_start(model, start_dir, 1 - (1 - weight) / (1 - applied), base_rows, quiet=True)
        applied = weight
        searched.append({"weight": weight, "english_bpb": english_bpb(), "seconds": time.perf_counter() - step})
    within = searched[-1]["english_bpb"] <= limit
    log.log(
        logging.INFO if within else logging.WARNING,
        "merge_with_base auto: English bits per byte %.4f for %s, %.4f trained; merged %.0f%% back: %.4f (%s "
        "the %.0f%% tolerance)",
        reference_bpb,
        reference,
        searched[0]["english_bpb"],
        100 * applied,
        searched[-1]["english_bpb"],
        "within" if within else "still above",
        100 * tolerance,
    )
    return {
        "weight": applied,
        "tolerance": tolerance,
        "within": within,
        "searched": searched,
        "merged": counts,
        "seconds": time.perf_counter() - started,
    }
