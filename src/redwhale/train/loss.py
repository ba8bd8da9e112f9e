"""Cross-entropy fused with the LM head, in chunks of tokens: the ``tokens x vocabulary`` logits never exist at once.

With a 150k vocabulary, fp32 logits and their gradient take ``8 x 150k`` bytes per token (a 16k-token micro-batch:
20 GB); on CPU, zero-filling and soft-maxing that tensor costs as much as several transformer layers. Here the head
matmul, log-sum-exp, loss and both gradients are computed chunk by chunk during the forward pass (the loss is the last
operation, so its gradient is known then; backward only scales it), as Liger-Kernel's fused linear cross-entropy
does on GPUs. Liger is GPU-only (Triton) and not a dependency, so this is written here, in plain PyTorch, for CPU and
GPU alike. The weight gradient is only computed when the head trains.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE = -100
LOSS_CHUNK = 2048  # tokens per chunk of logits


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``IGNORE`` targets are skipped)."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        compute_dtype: torch.dtype | None,
    ):
        dtype = compute_dtype or hidden.dtype
        w = weight.to(dtype)
        valid = targets != IGNORE
        count = valid.sum().clamp(min=1)
        need_hidden = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(dtype)
            t = targets[start : start + chunk]
            keep = valid[start : start + chunk]
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
            total += ((lse - picked) * keep).sum()
            if need_hidden or need_weight:
                probs = torch.exp_(logits.sub_(lse[:, None]))
                probs[torch.arange(len(t), device=t.device), t.clamp(min=0)] -= 1.0
                probs.mul_((keep.float() / count)[:, None])
                g = probs.to(dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk] = (g @ w).to(hidden.dtype)
                if need_weight:
                    if dtype == torch.float32:
                        grad_weight.addmm_(g.T, h)
                    else:  # the matmul on bf16 tensor cores, as autocast's own backward would do; summed in fp32
                        grad_weight.add_(g.T @ h)
        ctx.save_for_backward(
            grad_hidden if need_hidden else torch.empty(0), grad_weight if need_weight else torch.empty(0)
        )
        ctx.need = (need_hidden, need_weight, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        need_hidden, need_weight, weight_dtype = ctx.need
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if need_hidden else None,
            (grad_weight * grad_output).to(weight_dtype) if need_weight else None,
            None,
            None,
            None,
        )


def fused_loss_supported(model: nn.Module) -> bool:
    """True for causal LMs whose head is a plain bias-free linear layer without logit soft-capping."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    return (
        isinstance(head, nn.Linear)
        and head.bias is None
        and not getattr(base.config, "final_logit_softcapping", None)
        and hasattr(base, "get_decoder")
    )


class CausalLMLoss(nn.Module):
    """Wraps a causal LM so that ``forward(input_ids)`` returns the next-token loss, computed with
    :class:`ChunkedLinearCrossEntropy` when the model allows it and by the model itself otherwise. Wrapping keeps the
    loss inside the module that DDP (or FSDP) sees, so gradient synchronisation works as usual."""

    def __init__(self, model: nn.Module, chunk: int = LOSS_CHUNK):
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.fused = fused_loss_supported(model)

    def forward(self, input_ids: torch.Tensor, **model_kwargs) -> torch.Tensor:
        if not self.fused:
            return self.model(input_ids=input_ids, labels=input_ids, **model_kwargs).loss
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(input_ids=input_ids, **model_kwargs).last_hidden_state
        flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = input_ids[:, 1:].reshape(-1)
        weight = base.get_output_embeddings().weight
        device = flat.device.type
        if device not in ("cuda", "cpu", "xpu", "mps"):  # e.g. "meta" in the memory plan: no autocast there
            return ChunkedLinearCrossEntropy.apply(flat, weight, targets, self.chunk, None)
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        with torch.autocast(device, enabled=False):
            return ChunkedLinearCrossEntropy.apply(flat, weight, targets, self.chunk, dtype)
