"""Initialising the rows of new tokens: decomposition and its rivals, and a calibration of the new logits.

Notation: ``E`` is the base input-embedding matrix, ``W`` the base output (LM head) matrix (``W is E`` when the head
is tied). The base tokenizer splits a new token ``t`` into base pieces ``p_1 .. p_k`` (its BPE applied to the token's
own byte string, so a token holding part of a character still decomposes exactly).

Methods (input row ``e_t``, output row ``w_t``; a tied model has one row, ``e_t``):

* ``random``: ``e_t, w_t ~ N(0, initializer_range^2)``, the model's own init distribution;
* ``mean``: ``e_t = mean_v E[v]``, ``w_t = mean_v W[v]`` over all base rows (transformers' default);
* ``decomposition`` (RedWhale): ``e_t = (1/k) sum_i E[p_i]``, ``w_t = (1/k) sum_i W[p_i]``;
* ``weighted``: position-weighted decomposition, ``e_t = sum_i a_i E[p_i]`` with ``a_i`` proportional to
  ``2^-(i-1)`` (the first piece weighs most), same for ``w_t``;
* ``eeve`` (Kim et al., EEVE-Korean): ``e_t`` as in decomposition, ``w_t = W[p_1]`` (untied heads only);
* ``calibrated``: decomposition, then each new token's logit gets an offset
  ``b_t = theta_0 + theta_1 (log(n_t + 1) - mean) + theta_2 (k_t - mean)``, where ``n_t`` is the token's count in
  the training text and ``k_t`` its number of pieces. ``theta`` is fitted by maximum likelihood on a sample of
  training text with the model frozen (three numbers for the whole vocabulary), so that new tokens neither steal
  nor lose probability mass at step 0.

A Llama head has no bias, so the offset is written into the rows through a *bias direction* ``v``: with ``mu`` and
``S`` the mean and covariance of the final hidden states ``h`` on the calibration text,
``v = (S + lambda I)^-1 mu / (mu^T (S + lambda I)^-1 mu)`` makes ``h . v`` close to 1 with the least variance, so
``w_t + b_t v`` adds about ``b_t`` to the logit. On SmolLM2 ``h . v`` is 1.00 +- 0.02 on Korean text. For a tied
model the same shift reaches the input row too; it is small next to the row (a few percent of its norm). A model that
multiplies its head's output by a scale (Cohere, Granite, measured by :func:`redwhale.core.bpb.logit_scale`) is
fitted on ``h`` times that scale, so that the offsets are offsets of its own logits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from redwhale.core.bpb import backbone, document_windows, logit_scale
from redwhale.core.errors import RedwhaleError
from redwhale.core.progress import ProgressFactory, no_file_progress

log = logging.getLogger(__name__)
RIDGE = 1.0  # lambda above, relative to the mean variance of the hidden dimensions


def decompose(base_backend, new_tokens: Sequence[str | None]) -> list[list[int]]:
    """Base piece ids of each new token (an empty list for reserved padding tokens, given as None)."""
    model = base_backend.model
    out = []
    for token in new_tokens:
        if token is None:
            out.append([])
            continue
        ids = [model.token_to_id(piece.value) for piece in model.tokenize(token)]
        if not ids or any(i is None for i in ids):
            raise RedwhaleError(f"the base tokenizer cannot decompose the new token {token!r}")
        out.append(ids)
    return out


def _combine(matrix: torch.Tensor, pieces: list[list[int]], weights: str) -> torch.Tensor:
    rows = torch.empty((len(pieces), matrix.shape[1]), dtype=torch.float32)
    mean = matrix.float().mean(0)
    for row, ids in enumerate(pieces):
        if not ids:
            rows[row] = mean
            continue
        block = matrix[ids].float()
        if weights == "first":
            rows[row] = block[0]
        elif weights == "position":
            w = torch.tensor([0.5**i for i in range(len(ids))])
            rows[row] = (w[:, None] * block).sum(0) / w.sum()
        else:
            rows[row] = block.mean(0)
    return rows


@dataclass(frozen=True)
class InitMethod:
    """An initialisation method: ``rows(embed, head, pieces, std, generator)`` returns the new input rows and (for an
    untied head) the new output rows; ``calibrated`` methods are followed by :func:`calibrate`."""

    name: str
    rows: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    needs_untied_head: bool = False
    calibrated: bool = False


#: Every init method by name. To add one, write its rows function below with ``@register``.
METHODS: dict[str, InitMethod] = {}


def register(name: str, needs_untied_head: bool = False, calibrated: bool = False):
    def add(rows: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]):
        METHODS[name] = InitMethod(name, rows, needs_untied_head, calibrated)
        return rows

    return add


@register("random")
def _random(embed, head, pieces, std, generator):
    n = len(pieces)
    new_in = torch.randn((n, embed.shape[1]), generator=generator) * std
    return new_in, None if head is None else torch.randn((n, head.shape[1]), generator=generator) * std


@register("mean")
def _mean(embed, head, pieces, std, generator):
    n = len(pieces)
    new_in = embed.float().mean(0).expand(n, -1).clone()
    return new_in, None if head is None else head.float().mean(0).expand(n, -1).clone()


@register("decomposition")
def _decomposition(embed, head, pieces, std, generator):
    return _combine(embed, pieces, "mean"), None if head is None else _combine(head, pieces, "mean")


@register("weighted")
def _weighted(embed, head, pieces, std, generator):
    return _combine(embed, pieces, "position"), None if head is None else _combine(head, pieces, "position")


@register("eeve", needs_untied_head=True)
def _eeve(embed, head, pieces, std, generator):
    return _combine(embed, pieces, "mean"), _combine(head, pieces, "first")


register("calibrated", calibrated=True)(_decomposition)


def initial_rows(
    method: str,
    embed: torch.Tensor,
    head: torch.Tensor | None,
    pieces: list[list[int]],
    std: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New input rows and (untied heads) new output rows, before any calibration."""
    if method not in METHODS:
        raise RedwhaleError(f"unknown init method {method!r}; choose from {', '.join(METHODS)}")
    if METHODS[method].needs_untied_head and head is None:
        raise RedwhaleError(f"{method} sets the output row from the first piece, which needs an untied LM head")
    return METHODS[method].rows(embed, head, pieces, std, generator)


@dataclass
class Calibration:
    """What the calibration fitted and measured (written to the init report)."""

    theta: list[float] = field(default_factory=list)
    features: list[str] = field(default_factory=lambda: ["1", "log(count+1) - mean", "pieces - mean"])
    positions: int = 0
    nll_before: float = 0.0
    nll_after: float = 0.0
    h_dot_v_mean: float = 0.0
    h_dot_v_std: float = 0.0
    offset_range: tuple[float, float] = (0.0, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bias_direction(hidden: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """The direction ``v`` with ``h . v`` close to 1 on these hidden states (least variance), see the module doc."""
    h = hidden.double()
    mu = h.mean(0)
    centred = h - mu
    cov = centred.T @ centred / max(len(h) - 1, 1)
    cov += ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=torch.float64)
    v = torch.linalg.solve(cov, mu)
    return (v / (mu @ v)).float()


def fit_offsets(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: torch.Tensor,
    base_size: int,
    features: torch.Tensor,
    max_iter: int = 50,
    chunk: int = 256,
) -> tuple[torch.Tensor, float, float]:
    """Fit ``theta`` (one weight per feature column) so that adding ``features @ theta`` to the new tokens' logits
    maximises the likelihood of ``targets`` given ``hidden``; returns theta and the mean NLL before and after.

    The NLL is convex in ``theta`` (a log-sum-exp of affine functions minus a linear term) and ``theta`` has three
    entries, so this is Newton's method with a backtracking line search, gradient and Hessian in closed form, written
    by hand: a few passes over the (positions x new tokens) logits. L-BFGS through autograd reached the same theta
    (to 1e-4) in 20-22 s at 40,000 new tokens and 52 s at 80,000 on 2 cores (SmolLM2, 2,048 positions); this takes 7-11
    and 17 s, time a budgeted run trains instead."""
    with torch.no_grad():
        logits = hidden.float() @ head.float().T
        base_lse = torch.logsumexp(logits[:, :base_size], dim=1)
        new_logits = logits[:, base_size:].contiguous()
        target_logit = logits.gather(1, targets[:, None]).squeeze(1)
        del logits
    is_new = targets >= base_size
    features = features.float()
    features64 = features.double()
    target_features = torch.where(is_new[:, None], features64[(targets - base_size).clamp(min=0)], 0.0)
    mean_target = target_features.mean(0)
    target_logit_sum = float(target_logit.double().sum())
    n = len(targets)

    def nll(theta: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """The mean NLL at ``theta``, its gradient and Hessian (p: each new token's probability; d log Z / d theta =
        p F, the Hessian its covariance)."""
        offsets = features @ theta.float()
        total = 0.0
        grad = torch.zeros(features.shape[1], dtype=torch.float64)
        hess = torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64)
        for lo in range(0, n, chunk):
            scores = new_logits[lo : lo + chunk] + offsets
            log_z = torch.logaddexp(base_lse[lo : lo + chunk], torch.logsumexp(scores, dim=1))
            total += float(log_z.double().sum())
            p = torch.exp(scores - log_z[:, None])
            pf = (p @ features).double()
            grad += pf.sum(0)
            hess += (features64.T * p.sum(0).double()) @ features64 - pf.T @ pf
        picked = target_logit_sum + float((target_features @ theta).sum())
        value = (total - picked) / n
        return value, grad / n - mean_target, hess / n

    with torch.no_grad():
        return _newton(nll, features.shape[1], max_iter)


def _newton(objective, dim: int, max_iter: int) -> tuple[torch.Tensor, float, float]:
    """Minimise a convex ``objective(theta) -> (value, gradient, Hessian)`` from 0 by Newton's method with Armijo
    backtracking; returns theta and the values at 0 and at theta."""
    theta = torch.zeros(dim, dtype=torch.float64)
    value, grad, hess = objective(theta)
    before = value
    for _ in range(max_iter):
        ridge = 1e-9 * float(hess.diagonal().abs().max()) + 1e-12
        step = -torch.linalg.solve(hess + ridge * torch.eye(len(theta), dtype=torch.float64), grad)
        decrement = -float(grad @ step)  # the Newton decrement squared: twice the predicted decrease
        if decrement < 1e-10:
            break
        size = 1.0
        while size > 1e-6:  # backtracking (Armijo); an accepted point's derivatives serve the next step
            trial = objective(theta + size * step)
            if trial[0] <= value - 0.25 * size * decrement:
                break
            size /= 2
        else:
            break  # no decrease along the Newton direction: at the optimum to float precision
        theta = theta + size * step
        value, grad, hess = trial
    return theta.float(), before, value


def offset_features(counts: torch.Tensor, pieces: list[list[int]]) -> torch.Tensor:
    """The feature matrix of the new tokens: a constant, centred log-count and centred number of pieces."""
    log_count = torch.log(counts.float() + 1.0)
    n_pieces = torch.tensor([max(len(p), 1) for p in pieces], dtype=torch.float32)
    return torch.stack([torch.ones_like(log_count), log_count - log_count.mean(), n_pieces - n_pieces.mean()], 1)


@torch.no_grad()
def collect_hidden(model, windows, max_positions: int, bar=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states before each scored target of ``windows`` and the targets, at most ``max_positions``
    (``bar``: a :class:`~redwhale.core.progress.Progress` over positions)."""
    device = next(model.parameters()).device
    decoder = backbone(model)
    hidden, targets = [], []
    total = 0
    for window in windows:
        ids = torch.tensor([window.ids], device=device)
        states = decoder(input_ids=ids).last_hidden_state[0]
        positions = list(range(max(window.score_from, 1), len(window.ids)))
        hidden.append(states[[p - 1 for p in positions]].float().cpu())
        targets.append(torch.tensor([window.ids[p] for p in positions]))
        taken = min(len(positions), max_positions - total)  # the last window is cut at the cap
        total += taken
        if bar is not None:
            bar.update(taken)
        if total >= max_positions:
            break
    return torch.cat(hidden)[:max_positions], torch.cat(targets)[:max_positions]


def calibrate(
    model,
    tokenizer,
    texts: Sequence[str],
    counts: torch.Tensor,
    pieces: list[list[int]],
    base_size: int,
    max_positions: int = 16384,
    progress: ProgressFactory = no_file_progress,
) -> Calibration:
    """Fit and apply the logit offsets of the new tokens (see ``calibrated`` in the module doc), in place."""

    if not texts:
        raise RedwhaleError("calibrated init needs calibration text (training text of the new language)")
    was_training = model.training
    model.eval()
    # windows side by side (no overlap): three numbers need hidden states, not the longest context for each
    windows, _, _ = document_windows(tokenizer, texts, window=1024, stride=1024)
    with progress("calibration", total=max_positions, unit="position") as bar:
        hidden, targets = collect_hidden(model, windows, max_positions, bar)
    # a model that scales its head's output (Cohere, Granite) has logits of s * (h . w): fitting on s * h keeps the
    # likelihood the model's own, and offsets along a direction with (s * h) . v ~ 1 are offsets of its own logits
    if (scale := logit_scale(model, windows[0].ids[:8])) != 1.0:
        log.info("calibration: the model multiplies its LM head's output by %.4g; fitted on its own logits", scale)
        hidden = hidden * scale
    head = model.get_output_embeddings().weight
    direction = bias_direction(hidden)
    features = offset_features(counts, pieces)
    theta, before, after = fit_offsets(hidden, targets, head.detach(), base_size, features)
    offsets = features @ theta
    with torch.no_grad():
        head[base_size:] += (offsets[:, None] * direction[None, :]).to(head.dtype)
    model.train(was_training)
    dots = hidden @ direction
    result = Calibration(
        theta=[round(float(x), 5) for x in theta],
        positions=len(targets),
        nll_before=before,
        nll_after=after,
        h_dot_v_mean=float(dots.mean()),
        h_dot_v_std=float(dots.std()),
        offset_range=(float(offsets.min()), float(offsets.max())),
    )
    log.info(
        "calibration: theta %s, NLL %.3f -> %.3f nats on %d positions, h.v = %.3f +- %.3f",
        result.theta,
        before,
        after,
        result.positions,
        result.h_dot_v_mean,
        result.h_dot_v_std,
    )
    if not math.isfinite(after) or after > before + 1e-6:
        raise RedwhaleError(f"calibration did not improve the likelihood ({before:.4f} -> {after:.4f})")
    return result
