"""Which dtype each weight has during a stage, and where the matrix products run.

* Frozen weights are held in the compute dtype (``model.dtype``; ``auto`` = bfloat16 on a GPU that supports it,
  float32 on CPU): a frozen weight needs no master copy, so a bfloat16 one costs 2 bytes instead of 4.
* The weights a stage trains are float32 master weights (``train.trainable_dtype: float32``, exact updates), or
  bfloat16 updated by a Kahan-compensated AdamW (``bfloat16``: 2 bytes for the weight and 2 for its compensation
  buffer, near-exact updates, see :mod:`redwhale.train.optim`).
* Matrix products: bfloat16 autocast (``train.precision: auto`` or ``bf16``) on a GPU that supports it and on a CPU
  with AMX or AVX512-BF16 (:func:`redwhale.core.environment.cpu_native_bf16`: 1.9x and 1.7x faster than float32 on
  SmolLM2-135M). On other CPUs, float32: a CPU without bfloat16 instructions multiplies bf16 matrices two hundred
  times slower than fp32 ones (0.2 against 45 GFLOP/s on one), so bfloat16 is a storage format there
  (:func:`cpu_bfloat16`): each linear layer upcasts its weight for the product and saves only the bf16 weight for
  backward, a bf16 embedding hands float32 rows to the layers (:class:`UpcastProducts`), and what autograd saves for
  backward is kept in bfloat16 (:class:`SavedInLowPrecision`), as autocast keeps it on a GPU. ``precision: bf16``
  forces autocast.
* A stage boundary re-casts: what the stage unfreezes goes to the trainable dtype, what it freezes back to the frozen
  dtype (a LoRA stage merges its adapters in float32 first, see :func:`redwhale.train.loop.merge_lora`).
* The saved model has ``model.dtype`` (float16 included: it is held in bfloat16 while training, which needs no loss
  scaling).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from redwhale.config.schema import TrainSection
from redwhale.core.environment import cpu_native_bf16
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
        products += " (bf16 weights upcast per layer, saved activations bf16)" if self.upcasts else ""
        return f"frozen {name(self.frozen)}, trainable {name(self.trainable)}, products {products}"

    def bytes(self, trainable: bool) -> int:
        return (self.trainable if trainable else self.frozen).itemsize


class _UpcastLinear(torch.autograd.Function):
    """``linear(x, w)`` with a low-precision weight computed in ``x``'s dtype; backward keeps the weight as stored
    (autograd through ``w.float()`` would save the float copy: as much memory as float weights)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # the input is needed only for the weight's gradient: a frozen layer keeps its weight alone, as F.linear does
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
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
    through :class:`_UpcastLinear`, and ``F.embedding`` of a bfloat16 table returns float32 rows (otherwise the
    layers below the first trainable one would run in bf16, the slow products this mode exists to avoid); everything
    else is left alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight.dtype == torch.bfloat16 and x.dtype == torch.float32:
                return _UpcastLinear.apply(x, weight, bias)
        if func is F.embedding:
            out = func(*args, **kwargs)
            return out.float() if out.dtype == torch.bfloat16 else out
        return func(*args, **kwargs)


class _Stored:
    """A view of a low-precision copy of a saved tensor's storage, and the dtype it is restored to."""

    __slots__ = ("base", "dtype", "offset", "shape", "stride")

    def __init__(self, base: torch.Tensor, dtype: torch.dtype, view: torch.Tensor):
        """``view``'s shape, strides and offset locate the saved tensor in ``base``."""
        self.base, self.dtype, self.offset = base, dtype, view.storage_offset()
        self.shape, self.stride = tuple(view.shape), view.stride()

    def restore(self) -> torch.Tensor:
        return self.base.as_strided(self.shape, self.stride, self.offset).to(self.dtype)


class SavedInLowPrecision(torch.autograd.graph.saved_tensors_hooks):
    """Within the block, every float32 tensor autograd saves for backward (parameters and tensors under
    ``min_numel`` elements aside) is kept as a ``dtype`` copy and restored to float32 when backward uses it: the
    activation memory of bf16 autocast, with float32 products. Backward then sees inputs rounded to bf16, as it does
    under autocast on a GPU; the forward pass, and so the loss, is unchanged. The copy is made per storage, so the
    views that several operations save of one tensor (a layer's normalised input, read by the query, key and value
    projections) share one copy, as they share one float32 storage. ``observe`` sees each tensor as it is kept (the
    memory plan counts them). Written by hand on ``saved_tensors_hooks``: PyTorch offers the hooks (and offloading
    to the host), not a low-precision store."""

    def __init__(self, parameters, dtype: torch.dtype = torch.bfloat16, observe=None, min_numel: int = 4096):
        self._params = {p.untyped_storage()._cdata for p in parameters}
        # storage -> (the storage, weakly: PyTorch keeps a storage's Python object while the storage lives, so the
        # reference dies with it and an address reused by a later storage is never mistaken for it; its version;
        # the copy)
        self._copies: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}
        # a closure, not a bound method: the hooks object holds its pack hook, and a method would make a reference
        # cycle that keeps every copy alive until the garbage collector runs (a step's activations, one step late)
        copies = self._copies
        super().__init__(functools.partial(SavedInLowPrecision._pack, self._params, dtype, observe, min_numel, copies),
                         SavedInLowPrecision._unpack)  # fmt: skip

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._copies.clear()  # the forward is over: the copies live on in the graph that saved them, and die with it

    @staticmethod
    def _pack(params: set[int], dtype: torch.dtype, observe, min_numel: int, copies: dict, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if tensor.dtype != torch.float32 or tensor.numel() < min_numel or storage._cdata in params:
            if observe is not None:
                observe(tensor)
            return tensor
        if 2 * tensor.numel() * tensor.element_size() < storage.nbytes():  # a small view of a large buffer
            copy = tensor.detach().to(dtype, memory_format=torch.contiguous_format)
            stored = _Stored(copy, tensor.dtype, copy)
        else:
            known = copies.get(storage._cdata)
            if known is None or known[0]() is not storage or known[1] != tensor._version:
                whole = tensor.detach().as_strided((storage.nbytes() // tensor.element_size(),), (1,), 0)
                known = (weakref.ref(storage), tensor._version, whole.to(dtype))
                copies[storage._cdata] = known
            stored = _Stored(known[2], tensor.dtype, tensor)
        if observe is not None:
            observe(stored.base)
        return stored

    @staticmethod
    def _unpack(packed):
        return packed.restore() if isinstance(packed, _Stored) else packed


def cpu_bfloat16(parameters, observe=None) -> contextlib.ExitStack:
    """bfloat16 as a storage format, float32 products (see the module docstring): :class:`UpcastProducts` and
    :class:`SavedInLowPrecision` together, for one forward pass (its backward may run after the block)."""
    stack = contextlib.ExitStack()
    stack.enter_context(SavedInLowPrecision(parameters, observe=observe))
    stack.enter_context(UpcastProducts())
    return stack


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
    fast_bf16 = bf16_supported(device) if device.type == "cuda" else device.type == "cpu" and cpu_native_bf16()
    use_autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and fast_bf16)
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
