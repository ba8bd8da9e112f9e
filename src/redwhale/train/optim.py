"""The optimizer of a stage, chosen by ``train.optimizer``, ``train.trainable_dtype`` and ``train.offload_optimizer``.

| choice | library | bytes per trained weight on the device (weight + gradient + state) |
|---|---|---|
| ``adamw``, float32 | torch (fused on CUDA and CPU) | 4 + 4 + 8 |
| ``adamw``, bfloat16 | torch-optimi ``AdamW(kahan_sum=True)``: Kahan-compensated updates of bf16 weights | 2 + 2 + 6 |
| ``adamw8bit``, float32 | bitsandbytes (CUDA) | 4 + 4 + 2 |
| ``adamw`` + ``offload_optimizer`` | torchao ``CPUOffloadOptimizer`` (CUDA): fp32 moments and master copy in host memory, the step there | 4 + 4 (0 when gradients are offloaded) + 0 (16 on the host) |
| ``sgd`` | torch, no momentum (distributed-equivalence tests) | 4 + 4 + 0 |

Kahan summation against stochastic rounding: both keep bf16 updates from vanishing below the weight's rounding step;
Kahan keeps the lost low bits in a compensation buffer (2 more bytes, deterministic, so resume stays bit-identical),
stochastic rounding costs nothing but adds noise and draws random numbers. torchao's CPU offload copies gradients in a
backward hook, before clipping; :class:`OffloadedAdamW` scales the host copies by the clipping coefficient before the
host step, and offloads gradients only without gradient accumulation (torchao would keep only the last micro-batch).
"""

from __future__ import annotations

import optimi  # torch-optimi: Kahan-compensated AdamW for low-precision weights
import torch

from redwhale.config.schema import TrainSection
from redwhale.core.errors import ConfigError, missing_extra


def state_bytes(cfg: TrainSection) -> tuple[float, float]:
    """(device, host) bytes of optimizer state per trained weight, for the memory plan."""
    if cfg.optimizer == "sgd":
        return 0.0, 0.0
    if cfg.offload_optimizer:
        return 0.0, 16.0  # fp32 master copy, fp32 gradient copy, two fp32 moments
    if cfg.optimizer == "adamw8bit":
        return 2.0 + 8.0 / 256, 0.0  # two uint8 moments and an fp32 scale per block of 256
    if cfg.trainable_dtype == "bfloat16":
        return 6.0, 0.0  # bf16 moments and Kahan compensation
    return 8.0, 0.0


def offloads_gradients(cfg: TrainSection, grad_accum: int) -> bool:
    return cfg.offload_optimizer and grad_accum == 1


def make_optimizer(groups: list[dict], cfg: TrainSection, device: torch.device, grad_accum: int = 1):
    """The optimizer of a stage over its parameter groups (each group carries its own lr and weight decay)."""
    betas = tuple(cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.0)
    if cfg.offload_optimizer:
        return OffloadedAdamW(groups, betas, device, offloads_gradients(cfg, grad_accum))
    if cfg.optimizer == "adamw8bit":
        if device.type != "cuda":
            raise ConfigError("train.optimizer: adamw8bit needs CUDA (bitsandbytes); use adamw on CPU")
        try:
            import bitsandbytes as bnb  # optional extra, CUDA only
        except ImportError:
            raise missing_extra("bitsandbytes", "cuda") from None
        return bnb.optim.AdamW8bit(groups, betas=betas)
    if cfg.trainable_dtype == "bfloat16":
        return optimi.AdamW(groups, lr=groups[0]["lr"], betas=betas, eps=1e-8, weight_decay=0.0, kahan_sum=True)
    # torch's fused kernel on CPU too (torch >= 2.4): one pass over every tensor instead of foreach's several, ~11-14%
    # more tokens/s on SmolLM2 than foreach (r31, `bench/cpt_explore.py speed`); the same AdamW to rounding.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, betas=betas, fused=fused, foreach=None if fused else True)


class OffloadedAdamW:
    """torchao's ``CPUOffloadOptimizer`` around fused AdamW, with clipping applied to the host gradients.

    Not a subclass: the wrapped optimizer's ``param_groups``, ``state_dict`` and ``load_state_dict`` are exposed, and
    ``clip`` replaces ``clip_grad_norm_`` (the device gradients are gone or already copied when it runs)."""

    def __init__(self, groups: list[dict], betas: tuple[float, float], device: torch.device, offload_grads: bool):
        if device.type != "cuda":
            raise ConfigError("train.offload_optimizer: needs a CUDA GPU (torchao's CPU offload)")
        try:
            from torchao.optim import CPUOffloadOptimizer  # optional extra
        except ImportError:
            raise missing_extra("torchao", "offload") from None
        self.inner = CPUOffloadOptimizer(
            groups, torch.optim.AdamW, offload_gradients=offload_grads, betas=betas, fused=True
        )

    @property
    def param_groups(self):
        return self.inner.param_groups

    def clip(self, max_norm: float) -> torch.Tensor:
        """Clip the gradients the host step will use (host copies and the small on-device ones) to ``max_norm``."""
        for event in self.inner.queue.values():
            event.synchronize()
        host = [p.grad for p in self.inner.param_d2h_map.values() if p.grad is not None]
        device = [p.grad for g in self.inner.d_param_groups for p in g["params"] if p.grad is not None]
        norms = [torch.linalg.vector_norm(g.float()) for g in host] + [
            torch.linalg.vector_norm(g.float()).cpu() for g in device
        ]
        total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for grad in host:
            grad.mul_(coef)
        for grad in device:
            grad.mul_(coef.to(grad.device))
        return total

    def step(self) -> None:
        self.inner.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=True)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state) -> None:
        self.inner.load_state_dict(state)
        for p_device, p_host in self.inner.param_d2h_map.items():  # the host copies follow the loaded weights
            p_host.copy_(p_device.detach())
