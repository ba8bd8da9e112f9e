"""Cross-entropy fused with the LM head, in chunks of tokens: the ``tokens x vocabulary`` logits never exist at once.

With a 150k vocabulary, fp32 logits and their gradient take ``8 x 150k`` bytes per token (a 16k-token micro-batch:
20 GB); on CPU, zero-filling and soft-maxing that tensor costs as much as several transformer layers. Here the head
matmul, log-sum-exp, loss and both gradients are computed chunk by chunk during the forward pass (the loss is the last
operation, so its gradient is known then; backward only scales it), as Liger-Kernel's fused linear cross-entropy
does on GPUs. Liger is GPU-only (Triton) and not a dependency, so this is written here, in plain PyTorch, for CPU and
GPU alike. The weight gradient is only computed when the head trains, and for the rows given alone when its new rows
step lazily (``StageSection.lazy_head_rows``: the new rows of the batch's tokens).
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE = -100
LOSS_CHUNK = 2048  # tokens per chunk of logits on a GPU
CPU_LOGITS_BYTES = 64 * 2**20  # a chunk of float32 logits on CPU: 341 tokens at a 49k vocabulary, no slower there
CPU_MIN_CHUNK = 256  # but at least this many tokens (a 128k vocabulary: 130 tokens a chunk were 13% slower)
CPU_MAX_LOGITS_BYTES = 256 * 2**20  # unless their logits would exceed this
HEAD_SLICE_ROWS = 8192  # rows of a low-precision head cast to the product's dtype at a time


def chunk_tokens(vocab_size: int, device_type: str) -> int:
    """Tokens per chunk of logits: :data:`LOSS_CHUNK` on an accelerator; on CPU as many as fit
    :data:`CPU_LOGITS_BYTES`, at least :data:`CPU_MIN_CHUNK` while those fit :data:`CPU_MAX_LOGITS_BYTES` (the chunk
    is the loss's whole transient memory; on 2 cores, ``ChunkedLinearCrossEntropy`` over 1,022 tokens was fastest at
    256 to 341 tokens a chunk at 49k and 128k vocabularies, slower at 130 or 512 and more)."""
    if device_type == "cpu":
        token_bytes = 4 * vocab_size
        floor = min(CPU_MIN_CHUNK, CPU_MAX_LOGITS_BYTES // token_bytes)
        return max(64, min(LOSS_CHUNK, max(CPU_LOGITS_BYTES // token_bytes, floor)))
    return LOSS_CHUNK


def _logits(h: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``h @ weight.T`` in ``dtype``. A weight stored in a narrower dtype (a bf16 head on a CPU computing in fp32) is
    cast a slice of rows at a time, so no full-size wider copy of it exists."""
    if weight.dtype == dtype or weight.dtype.itemsize >= dtype.itemsize:
        return h @ weight.to(dtype).T
    out = h.new_empty((h.shape[0], weight.shape[0]), dtype=dtype)
    for start in range(0, weight.shape[0], HEAD_SLICE_ROWS):
        rows = weight[start : start + HEAD_SLICE_ROWS].to(dtype)
        torch.mm(h, rows.T, out=out[:, start : start + HEAD_SLICE_ROWS])
    return out


def _input_grad(g: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``g @ weight`` in ``dtype``, casting a narrower weight slice by slice as :func:`_logits` does."""
    if weight.dtype == dtype or weight.dtype.itemsize >= dtype.itemsize:
        return g @ weight.to(dtype)
    out = g.new_zeros((g.shape[0], weight.shape[1]), dtype=dtype)
    for start in range(0, weight.shape[0], HEAD_SLICE_ROWS):
        out.addmm_(g[:, start : start + HEAD_SLICE_ROWS], weight[start : start + HEAD_SLICE_ROWS].to(dtype))
    return out


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``IGNORE`` targets are skipped). With
    ``rows`` (row indices of ``weight``), the weight's gradient is computed for those rows only (zero elsewhere)."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        compute_dtype: torch.dtype | None,
        rows: torch.Tensor | None = None,
    ):
        dtype = compute_dtype or hidden.dtype
        weight_dtype = weight.dtype
        valid = targets != IGNORE
        count = valid.sum().clamp(min=1)
        need_hidden = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        # the rows' gradient, summed apart and written into the zeros at the end
        grad_rows = grad_weight.new_zeros((len(rows), weight.shape[1])) if need_weight and rows is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # a head wider than the products (float32 weights under bf16 autocast) is cast once, not at every chunk's two
        # products: on CPU each cast of a 128k-row head cost as much as its matmul. The copy is the size of the one a
        # chunk's product made anyway, alive across the loop instead of inside each product
        if weight_dtype.itemsize > dtype.itemsize:
            weight = weight.detach().to(dtype)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(dtype)
            t = targets[start : start + chunk]
            keep = valid[start : start + chunk]
            logits = _logits(h, weight, dtype).float()
            picked = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
            # log-sum-exp in place (torch.logsumexp allocates a second logits-sized tensor); the exponentials,
            # divided by their sums, are the softmax the gradient needs
            peak = logits.amax(dim=-1, keepdim=True)
            sums = torch.exp_(logits.sub_(peak)).sum(dim=-1, keepdim=True)
            lse = (peak + sums.log()).squeeze(1)
            total += ((lse - picked) * keep).sum()
            if need_hidden or need_weight:
                # (softmax - one-hot) * keep / count: the softmax and the scale in one pass over the chunk
                scale = keep.float() / count
                probs = logits.mul_(scale[:, None] / sums)
                probs[torch.arange(len(t), device=t.device), t.clamp(min=0)] -= scale
                g = probs.to(dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk] = _input_grad(g, weight, dtype).to(hidden.dtype)
                if need_weight:
                    into, g = (grad_weight, g) if rows is None else (grad_rows, g[:, rows])
                    if dtype == torch.float32:
                        into.addmm_(g.T, h)
                    else:  # the matmul on bf16 tensor cores, as autocast's own backward would do; summed in fp32
                        into.add_(g.T @ h)
            logits = probs = g = None  # before the next chunk's logits exist: one chunk alive at a time, not two
        if grad_rows is not None:
            grad_weight.index_copy_(0, rows, grad_rows)
        ctx.save_for_backward(
            grad_hidden if need_hidden else torch.empty(0), grad_weight if need_weight else torch.empty(0)
        )
        ctx.need = (need_hidden, need_weight, weight_dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        need_hidden, need_weight, weight_dtype = ctx.need
        # scaled in place: the buffer is this loss's own (no graph reads it again), and a copy would be a second
        # float32 head-sized tensor at the moment backward peaks
        return (
            grad_hidden.mul_(grad_output.to(grad_hidden.dtype)) if need_hidden else None,
            grad_weight.mul_(grad_output).to(weight_dtype) if need_weight else None,
            None,
            None,
            None,
            None,
        )


# config attributes by which transformers' causal LMs change their logits after the head (soft-capping: Gemma 2 and
# later; a scale: Cohere, Granite (divides), HyperCLOVA X (multiplies), Falcon-H1): the fused loss computes the head's
# own logits only, so such a model computes its loss itself
LOGIT_SCALES = ("logit_scale", "logits_scaling", "lm_head_multiplier", "output_multiplier")


def transforms_logits(config) -> bool:
    """Whether ``config`` (or its ``text_config``) names a soft-cap or a scale applied to the logits after the head."""
    configs = [c for c in (config, getattr(config, "text_config", None)) if c is not None]
    return any(
        getattr(c, "final_logit_softcapping", None)
        or any(getattr(c, name, None) not in (None, 1) for name in LOGIT_SCALES)
        for c in configs
    )


def fused_loss_supported(model: nn.Module) -> bool:
    """True for causal LMs whose head is a plain bias-free linear layer whose output are the logits (no soft-cap or
    scale after it that the config names; a trainer also checks the model's own logits once, see
    :func:`redwhale.core.bpb.head_matches_model`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    return (
        isinstance(head, nn.Linear)
        and head.bias is None
        and not transforms_logits(base.config)
        and hasattr(base, "get_decoder")
    )


class CausalLMLoss(nn.Module):
    """Wraps a causal LM so that ``forward(input_ids)`` returns the next-token loss, computed with
    :class:`ChunkedLinearCrossEntropy` when the model allows it and by the model itself otherwise. Wrapping keeps the
    loss inside the module that DDP (or FSDP) sees, so gradient synchronisation works as usual."""

    def __init__(
        self, model: nn.Module, chunk: int | None = None, plain_head: bool = True, lazy_from: int | None = None
    ):
        super().__init__()
        self.model = model
        self.chunk = chunk  # None: chunk_tokens() for the device
        # plain_head: False when the caller found the model's logits are not its head's output (head_matches_model)
        self.fused = plain_head and fused_loss_supported(model)
        # lazy_from: the head's new rows (from this row on) step lazily, so its gradient is needed for the new rows of
        # the batch's tokens alone (Selection.lazy_from)
        self.lazy_from = lazy_from
        self._cast: tuple[tuple, torch.Tensor] | None = None  # a frozen head in the products' dtype, kept (CPU)

    def _frozen_head(self, weight: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """``weight`` in ``dtype``, cast once and kept while it stays frozen and unchanged, for a frozen CPU head wider
        than the products (a float32 head under bf16 autocast): the loss casts it at every forward otherwise (~50 ms
        of a ~2.8 s step for bench_cpt.py's 128k-row head on 2 cores). Not on accelerators, where the cast is cheap
        and the copy's memory is not (kept, it would be alive through the backward pass)."""
        if (
            dtype is None
            or weight.requires_grad
            or weight.device.type != "cpu"
            or weight.dtype.itemsize <= dtype.itemsize
        ):
            return weight
        key = (weight.data_ptr(), weight._version, dtype)
        if self._cast is None or self._cast[0] != key:
            self._cast = None  # the old copy released before the new one exists
            self._cast = (key, weight.detach().to(dtype))
        return self._cast[1]

    def forward(self, input_ids: torch.Tensor, **model_kwargs) -> torch.Tensor:
        if not self.fused:
            return self.model(input_ids=input_ids, labels=input_ids, **model_kwargs).loss
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(input_ids=input_ids, **model_kwargs).last_hidden_state
        flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = input_ids[:, 1:].reshape(-1)
        weight = base.get_output_embeddings().weight
        device = flat.device.type
        chunk = self.chunk or chunk_tokens(weight.shape[0], device)
        rows = None
        if self.lazy_from is not None and weight.requires_grad and device != "meta":
            rows = torch.unique(input_ids[input_ids >= self.lazy_from])
        if device not in ("cuda", "cpu", "xpu", "mps"):  # e.g. "meta" in the memory plan: no autocast there
            return ChunkedLinearCrossEntropy.apply(flat, weight, targets, chunk, None, rows)
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        weight = self._frozen_head(weight, dtype)
        with torch.autocast(device, enabled=False):
            return ChunkedLinearCrossEntropy.apply(flat, weight, targets, chunk, dtype, rows)
