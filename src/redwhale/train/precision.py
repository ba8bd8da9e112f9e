"""Which dtype each weight has during a stage, and where the matrix products run.

* Frozen weights are held in the compute dtype (``model.dtype``; ``auto`` = bfloat16 on a GPU that supports it,
  float32 on CPU): a frozen weight needs no master copy, so a bfloat16 one costs 2 bytes instead of 4.
* The weights a stage trains are float32 master weights (``train.trainable_dtype: float32``, exact updates), or
  bfloat16 updated by a Kahan-compensated AdamW (``bfloat16``: 2 bytes for the weight and 2 for its compensation
  buffer, near-exact updates, see :mod:`redwhale.train.optim`).
* Matrix products run under bfloat16 autocast whenever some weight is bfloat16 (``train.precision: auto``), since a
  product of a float32 activation with a bfloat16 weight needs one.
* A stage boundary re-casts: what the stage unfreezes goes to the trainable dtype, what it freezes back to the frozen
  dtype (a LoRA stage merges its adapters in float32 first, see :func:`redwhale.train.loop.merge_lora`).
* The saved model has ``model.dtype`` (float16 included: it is held in bfloat16 while training, which needs no loss
  scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from redwhale.config.schema import TrainSection
from redwhale.core.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    frozen: torch.dtype
    trainable: torch.dtype
    autocast: torch.dtype | None  # None: matrix products in float32
    saved: torch.dtype

    def describe(self) -> str:
        name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
        products = f"{name(self.autocast)} autocast" if self.autocast else "float32"
        return f"frozen {name(self.frozen)}, trainable {name(self.trainable)}, products {products}"

    def bytes(self, trainable: bool) -> int:
        return (self.trainable if trainable else self.frozen).itemsize


def bf16_supported(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def resolve_precision(model_dtype: str, cfg: TrainSection, device: torch.device) -> Precision:
    """The dtypes of a training run on ``device`` for the config's ``model.dtype`` and ``train`` settings."""
    if model_dtype == "auto":
        frozen = torch.bfloat16 if device.type == "cuda" and bf16_supported(device) else torch.float32
    else:
        frozen = torch.float32 if model_dtype == "float32" else torch.bfloat16
    trainable = DTYPES[cfg.trainable_dtype]
    low = torch.bfloat16 in (frozen, trainable)
    if low and not bf16_supported(device):
        raise ConfigError("bfloat16 weights need a GPU that supports bfloat16; set model.dtype: float32")
    if cfg.precision == "fp32" and low:
        raise ConfigError("train.precision: fp32 cannot multiply bfloat16 weights; use auto or bf16")
    if cfg.precision == "bf16" and not bf16_supported(device):
        raise ConfigError("train.precision: bf16 needs a GPU that supports it; use auto or fp32")
    gpu_bf16 = device.type == "cuda" and bf16_supported(device)
    use_autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and (low or gpu_bf16))
    saved = frozen if model_dtype == "auto" else DTYPES[model_dtype]
    return Precision(frozen, trainable, torch.bfloat16 if use_autocast else None, saved)


def apply_dtypes(model: nn.Module, precision: Precision) -> int:
    """Cast every parameter to its stage dtype (trainable: ``requires_grad``); returns how many were cast. Casting
    ``param.data`` keeps each Parameter object, so tied weights stay tied."""
    cast = 0
    with torch.no_grad():
        for param in model.parameters():
            target = precision.trainable if param.requires_grad else precision.frozen
            if param.is_floating_point() and param.dtype != target:
                param.data = param.data.to(target)
                cast += 1
    return cast
