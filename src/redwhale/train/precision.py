"""Which dtype each weight has during a stage, and where the matrix products run.

* Frozen weights are held in the compute dtype (``model.dtype``; ``auto`` = bfloat16 on a GPU that supports it,
  float32 on CPU): a frozen weight needs no master copy, so a bfloat16 one costs 2 bytes instead of 4.
* The weights a stage trains are float32 master weights (``train.trainable_dtype: float32``, exact updates), or
  bfloat16 updated by a Kahan-compensated AdamW (``bfloat16``: 2 bytes for the weight and 2 for its compensation
  buffer, near-exact updates, see :mod:`redwhale.train.optim`).
* Matrix products: on a GPU, bfloat16 autocast (``train.precision: auto`` or ``bf16``). On CPU, float32: a CPU
  without bfloat16 instructions multiplies bf16 matrices two hundred times slower than fp32 ones (0.2 against 45
  GFLOP/s here), so bfloat16 weights are a storage format there and each linear layer upcasts its weight for the
  product, saving only the bf16 weight for backward (:class:`UpcastProducts`); ``precision: bf16`` forces autocast.
* A stage boundary re-casts: what the stage unfreezes goes to the trainable dtype, what it freezes back to the frozen
  dtype (a LoRA stage merges its adapters in float32 first, see :func:`redwhale.train.loop.merge_lora`).
* The saved model has ``model.dtype`` (float16 included: it is held in bfloat16 while training, which needs no loss
  scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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

    @property
    def upcasts(self) -> bool:
        """Products in float32 over some bfloat16-stored weights (see the module docstring)."""
        return self.autocast is None and torch.bfloat16 in (self.frozen, self.trainable)

    def describe(self) -> str:
        name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
        products = f"{name(self.autocast)} autocast" if self.autocast else "float32"
        products += " (bf16 weights upcast per layer)" if self.upcasts else ""
        return f"frozen {name(self.frozen)}, trainable {name(self.trainable)}, products {products}"

    def bytes(self, trainable: bool) -> int:
        return (self.trainable if trainable else self.frozen).itemsize


class _UpcastLinear(torch.autograd.Function):
    """``linear(x, w)`` with a low-precision weight computed in ``x``'s dtype; backward keeps the weight as stored
    (autograd through ``w.float()`` would save the float copy: as much memory as float weights)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight.to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])).to(weight.dtype)
        grad_b = (
            grad.reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
            if ctx.has_bias and ctx.needs_input_grad[2]
            else None
        )
        return grad_x, grad_w, grad_b


class UpcastProducts(torch.overrides.TorchFunctionMode):
    """Within the block, every ``F.linear`` whose weight is bfloat16 and whose input is float32 runs in float32
    through :class:`_UpcastLinear`; everything else is left alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight.dtype == torch.bfloat16 and x.dtype == torch.float32:
                return _UpcastLinear.apply(x, weight, bias)
        return func(*args, **kwargs)


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
    if cfg.precision == "fp32" and low and device.type == "cuda":
        raise ConfigError("train.precision: fp32 with bfloat16 weights on a GPU; use auto or bf16")
    if cfg.precision == "bf16" and not bf16_supported(device):
        raise ConfigError("train.precision: bf16 needs a GPU that supports it; use auto or fp32")
    gpu_bf16 = device.type == "cuda" and bf16_supported(device)
    use_autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and gpu_bf16)
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
