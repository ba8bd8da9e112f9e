"""Bits per byte: a loss that does not depend on the tokenizer.

``bpb = (sum over documents of the negative log-likelihood of their tokens, in bits) / (their UTF-8 bytes)``.

Each document is scored on its own: it is prefixed with the tokenizer's BOS token (its EOS when it has no BOS) and
every one of its tokens is predicted, so a model with a merged tokenizer and the base model with its own tokenizer
are scored on exactly the same bytes. A document longer than the window is scored in overlapping windows: each window
scores only tokens not scored before and gives them up to ``window - stride`` tokens of context.

Windows are batched by length (longest first), and the LM head is applied in chunks of positions, so the
``positions x vocabulary`` logits never exist at once.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from redwhale.core.errors import DataError
from redwhale.core.progress import Progress, ProgressFactory

log = logging.getLogger(__name__)


@dataclass
class BpbResult:
    bits_per_byte: float
    nll_bits: float
    bytes: int
    tokens: int
    documents: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "bits_per_byte": self.bits_per_byte,
            "nll_bits": self.nll_bits,
            "bytes": self.bytes,
            "tokens": self.tokens,
            "documents": self.documents,
        }


def prefix_token_id(tokenizer) -> int:
    """The id each document starts from: BOS, else EOS."""
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise DataError("the tokenizer has neither a BOS nor an EOS token to start documents from")


@dataclass
class _Window:
    ids: list[int]
    score_from: int  # positions >= score_from (as targets) are scored


def _windows(ids: list[int], window: int, stride: int) -> list[_Window]:
    """Split a prefixed document into windows; targets are positions 1..n-1, each scored exactly once."""
    if len(ids) <= window:
        return [_Window(ids, 1)]
    out = []
    scored_to = 1  # next target position to score
    start = 0
    while scored_to < len(ids):
        end = min(start + window, len(ids))
        out.append(_Window(ids[start:end], scored_to - start))
        scored_to = end
        if end == len(ids):
            break
        start = end - (window - stride)
    return out


def document_windows(tokenizer, texts: Sequence[str], window: int, stride: int) -> tuple[list[_Window], int, int]:
    """Tokenise documents (prefixed), cut them into windows; also return total bytes and scored tokens."""
    prefix = prefix_token_id(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    windows: list[_Window] = []
    total_bytes = 0
    tokens = 0
    for text, ids in zip(texts, encoded, strict=True):
        if not text:
            continue
        total_bytes += len(text.encode("utf-8"))
        tokens += len(ids)
        windows.extend(_windows([prefix, *ids], window, stride))
    return windows, total_bytes, tokens


def backbone(model):
    """The model without its LM head (its decoder), whose last hidden states the head reads."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model


@torch.no_grad()
def _logits_both_ways(model, ids: Sequence[int], vocab: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits for ``ids`` as scoring computes them from the backbone's hidden states, and the model's own."""
    was_training = model.training
    model.eval()  # no dropout: the two passes must see the same network
    try:
        batch = torch.tensor([list(ids)], device=next(model.parameters()).device)
        theirs = model(input_ids=batch).logits[0, :, :vocab].float()
        ours = _head_logits(model, backbone(model)(input_ids=batch).last_hidden_state[0], vocab)
    finally:
        model.train(was_training)
    return ours, theirs


def _same_logits(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    # bf16 products round each logit to ~0.4%; a logit scale off 1 by more than ~1% is caught
    return ours.shape == theirs.shape and bool((ours - theirs).norm() <= 1e-2 * theirs.norm())


def head_matches_model(model, ids: Sequence[int], vocab: int | None = None) -> bool:
    """Whether ``model``'s own logits for ``ids`` (the first ``vocab`` columns) are what scoring computes from its
    backbone's last hidden states: its LM head, soft-capped where its config says. True of most causal LMs; false of
    those that also scale their logits (Cohere's ``logit_scale``, Granite's division and HyperCLOVA X's
    multiplication by ``logits_scaling``, Falcon-H1's ``lm_head_multiplier``) and of remote code doing what no
    attribute names. Run on the few tokens given, both ways (written by hand: no transformers API says what a model
    does after its head)."""
    return _same_logits(*_logits_both_ways(model, ids, vocab))


_OWN_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scores_with_own_head(model, ids: Sequence[int]) -> bool:
    """:func:`head_matches_model`, once per model object (what a model does after its head is its architecture's,
    not its weights': a perplexity filter scoring document after document checks once, a trainer checking its model
    before training and scoring its English after, once)."""
    if model not in _OWN_HEAD:
        _OWN_HEAD[model] = head_matches_model(model, ids)
        if not _OWN_HEAD[model]:
            log.info("scoring with the model's own forward pass: its logits are not its LM head's (a logit scale?)")
    return _OWN_HEAD[model]


def logit_scale(model, ids: Sequence[int]) -> float:
    """The factor ``model`` multiplies its LM head's output by to give its logits, measured on ``ids`` (Cohere's
    ``logit_scale``, 1 / Granite's ``logits_scaling``, ...): 1.0 when its logits are its head's, and when they are
    not a multiple of it either (logged: nothing a calibration in head units can follow)."""
    ours, theirs = _logits_both_ways(model, ids, None)
    if _same_logits(ours, theirs):
        return 1.0
    scale = float((ours * theirs).sum() / (ours * ours).sum())
    if _same_logits(scale * ours, theirs):
        return scale
    log.warning("the model's logits are not a multiple of its LM head's output: its head's units are used as they are")
    return 1.0


def _head_logits(model, hidden: torch.Tensor, vocab: int | None = None) -> torch.Tensor:
    head = model.get_output_embeddings()
    if vocab is None:
        logits = head(hidden)
    else:
        bias = getattr(head, "bias", None)
        logits = torch.nn.functional.linear(hidden, head.weight[:vocab], None if bias is None else bias[:vocab])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


@torch.no_grad()
def window_nlls(
    model,
    windows: list[_Window],
    batch_tokens: int = 4096,
    head_chunk: int = 1024,
    pad_id: int = 0,
    progress: Progress | None = None,
    vocabs: Sequence[int | None] = (None,),
    own_head: bool = True,
) -> list[float]:
    """Sums of negative log-likelihoods (nats) of the scored targets of every window, one for each of ``vocabs``
    from one forward pass (``None``: the whole head; an int: the softmax over its first rows only, see
    :func:`bits_per_byte`). ``own_head``: logits from the backbone's hidden states at the scored positions only
    (:func:`head_matches_model` says when that is the model's own); else from the model's forward pass, every
    position's (batches of at most 1,024 tokens, or one longer window)."""
    device = next(model.parameters()).device
    decoder = backbone(model)
    batch_tokens = batch_tokens if own_head else min(batch_tokens, 1024)
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    totals = [0.0] * len(vocabs)
    widest = None if None in vocabs else max(vocabs)
    i = 0
    while i < len(order):
        longest = len(windows[order[i]].ids)
        per_batch = max(1, batch_tokens // longest)
        batch = [windows[j] for j in order[i : i + per_batch]]
        i += per_batch
        if progress is not None:
            progress.update(len(batch))
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, w in enumerate(batch):
            ids[row, : len(w.ids)] = torch.tensor(w.ids)
            mask[row, : len(w.ids)] = 1
        forward = decoder if own_head else model
        out = forward(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        hidden = out.last_hidden_state if own_head else out.logits
        rows, cols, targets = [], [], []
        for row, w in enumerate(batch):
            for pos in range(max(w.score_from, 1), len(w.ids)):
                rows.append(row)
                cols.append(pos - 1)
                targets.append(w.ids[pos])
        if not targets:
            continue
        rows_at, cols_at = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        target = torch.tensor(targets, device=device)
        for start in range(0, len(targets), head_chunk):  # gathered a chunk at a time: logits are vocabulary-wide
            chunk = hidden[rows_at[start : start + head_chunk], cols_at[start : start + head_chunk]]
            logits = _head_logits(model, chunk, widest) if own_head else chunk[:, :widest].float()
            for k, vocab in enumerate(vocabs):
                totals[k] += torch.nn.functional.cross_entropy(
                    logits[:, :vocab], target[start : start + head_chunk], reduction="sum"
                ).item()
    return totals


def bits_per_byte(
    model,
    tokenizer,
    texts: Sequence[str],
    window: int = 1024,
    stride: int = 512,
    batch_tokens: int = 4096,
    progress: ProgressFactory | None = None,
    what: str = "bits per byte",
    vocab: int | None = None,
) -> BpbResult:
    """Bits per UTF-8 byte of ``texts`` under ``model`` with ``tokenizer`` (each document from BOS/EOS); with
    ``progress``, the windows scored are shown as ``what``. ``vocab``: the softmax over the first ``vocab`` rows of
    the LM head only: on an extended model, ``vocab`` = the base tokenizer's size scores the base model itself
    wherever the extension left the base rows as they were (text the merged tokenizer splits into base tokens only,
    such as English; any other is a :class:`DataError`), less any padding rows the base had beyond its tokenizer."""
    return bits_per_byte_each(model, tokenizer, texts, window, stride, batch_tokens, progress, what, (vocab,))[0]


def bits_per_byte_each(
    model,
    tokenizer,
    texts: Sequence[str],
    window: int = 1024,
    stride: int = 512,
    batch_tokens: int = 4096,
    progress: ProgressFactory | None = None,
    what: str = "bits per byte",
    vocabs: Sequence[int | None] = (None,),
) -> list[BpbResult]:
    """:func:`bits_per_byte` for each of ``vocabs`` from one forward pass over the text (an extended model and the
    base model it holds, say: ``(None, base_size)``)."""
    texts = [t for t in texts if t]
    if not texts:
        raise DataError("no text to score")
    if not 0 < stride <= window:
        raise ValueError("stride must be in (0, window]")
    windows, total_bytes, tokens = document_windows(tokenizer, texts, window, stride)
    narrowest = min((v for v in vocabs if v is not None), default=None)
    if narrowest is not None and (top := max(max(w.ids) for w in windows)) >= narrowest:  # before any forward pass
        raise DataError(f"the text holds token {top}, beyond the first {narrowest:,} scored")
    was_training = model.training
    model.eval()
    bar = progress(what, total=len(windows), unit="window") if progress is not None else None
    try:
        own_head = scores_with_own_head(model, windows[0].ids[:8])
        pad = tokenizer.pad_token_id or 0
        nlls = window_nlls(model, windows, batch_tokens, pad_id=pad, progress=bar, vocabs=vocabs, own_head=own_head)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    bits = [nll / math.log(2) for nll in nlls]
    return [BpbResult(b / total_bytes, b, total_bytes, tokens, len(texts)) for b in bits]
