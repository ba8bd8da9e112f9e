"""``redwhale model extend``: grow a model to a merged vocabulary and initialise the new rows.

The input embeddings and the LM head are resized to the merged tokenizer (an untied head gets its own rows); every
base row is left bit-identical; the new rows are set by one of the methods of :mod:`redwhale.models.init`, then (by
default, ``input_norm="base"``) the new *input* rows are scaled to the base rows' mean norm: averaging pieces shrinks
a row (2.0 against 3.2 on SmolLM2), and inputs that small are what the layers then spend their training on. A tied
model is untied for that (the head keeps the init's rows, so its logits stay as initialised and calibrated; memory:
one more vocabulary-sized matrix). The output is a plain Hugging Face folder (safetensors, ``vocab_size`` updated,
the merged tokenizer, a generation config, and ``init_report.json``) that ``AutoModelForCausalLM`` loads without
redwhale.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from redwhale.core.errors import RedwhaleError, TokenizerError
from redwhale.core.io import atomic_dir, atomic_write_json
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.models.init import METHODS, calibrate, decompose, initial_rows

log = logging.getLogger(__name__)


def is_tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def check_vocabularies(base_tokenizer, merged_tokenizer, model) -> None:
    """The merged tokenizer must keep every base token at its id and add at least one token."""
    base_vocab = base_tokenizer.get_vocab()
    merged_vocab = merged_tokenizer.get_vocab()
    moved = [t for t, i in base_vocab.items() if merged_vocab.get(t) != i]
    if moved:
        raise TokenizerError(
            f"the tokenizer is not a superset of the model's: {len(moved)} base tokens are missing or moved "
            f"(e.g. {moved[:3]}); merge it with `redwhale tokenizer merge` first"
        )
    if len(merged_tokenizer) <= len(base_tokenizer):
        raise TokenizerError(
            f"the tokenizer does not extend the model's vocabulary ({len(merged_tokenizer)} tokens, the base has "
            f"{len(base_tokenizer)})"
        )
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(base_tokenizer):
        raise TokenizerError(f"the model has {rows} embedding rows but its tokenizer {len(base_tokenizer)} tokens")


def new_token_strings(merged_tokenizer, start: int) -> list[str | None]:
    """The vocabulary strings of the new ids (None for special tokens such as reserved padding)."""
    backend = merged_tokenizer.backend_tokenizer
    specials = {t.content for t in getattr(merged_tokenizer, "added_tokens_decoder", {}).values() if t.special}
    tokens = []
    for token_id in range(start, len(merged_tokenizer)):
        token = backend.id_to_token(token_id)
        tokens.append(None if token is None or token in specials else token)
    return tokens


def count_tokens(tokenizer, texts: Sequence[str], batch: int = 1000) -> torch.Tensor:
    """How often each id occurs when ``texts`` are tokenised."""
    counts = torch.zeros(len(tokenizer), dtype=torch.float64)
    for start in range(0, len(texts), batch):
        for ids in tokenizer(list(texts[start : start + batch]), add_special_tokens=False)["input_ids"]:
            if ids:
                counts += torch.bincount(torch.tensor(ids), minlength=len(tokenizer)).double()
    return counts


def extend(
    model,
    base_tokenizer,
    merged_tokenizer,
    method: str,
    *,
    calibration_texts: Sequence[str] = (),
    counts: torch.Tensor | None = None,
    seed: int = 0,
    calibration_positions: int = 2048,
    input_norm: str = "base",
    progress: ProgressFactory = no_file_progress,
) -> dict[str, Any]:
    """Resize ``model`` to ``merged_tokenizer`` in place and initialise the new rows by ``method``, then (``input_norm``
    "base", any method but ``random``: it draws from the model's own init) scale the new input rows to the base rows'
    mean norm, untying a tied head. ``calibrated`` needs ``calibration_texts`` (training text: its hidden states fit
    the offsets) and uses ``counts`` (token counts by id; without them the sample is counted) for token frequency."""
    check_vocabularies(base_tokenizer, merged_tokenizer, model)
    scale_inputs = _scales_input_rows(input_norm, method)
    started = time.perf_counter()
    base_size, merged_size = len(base_tokenizer), len(merged_tokenizer)
    tied = is_tied(model)
    tokens = new_token_strings(merged_tokenizer, base_size)
    pieces = decompose(base_tokenizer.backend_tokenizer, tokens)
    embed = model.get_input_embeddings().weight.detach()[:base_size].clone()
    head = None if tied else model.get_output_embeddings().weight.detach()[:base_size].clone()
    std = float(getattr(model.config, "initializer_range", 0.0) or embed.float().std())
    generator = torch.Generator().manual_seed(seed)
    new_in, new_out = initial_rows(method, embed, head, pieces, std, generator)

    rows = _grow(model, base_size, merged_size, new_in, new_out, tied)
    report: dict[str, Any] = {
        "method": method,
        "tied": tied,
        "base_vocab": base_size,
        "merged_vocab": merged_size,
        "rows": rows,
        "new_tokens": merged_size - base_size,
        "reserved_tokens": sum(t is None for t in tokens),
        "mean_pieces": sum(len(p) for p in pieces if p) / max(sum(1 for p in pieces if p), 1),
    }
    if METHODS[method].calibrated:
        if counts is None:
            counts = count_tokens(merged_tokenizer, list(calibration_texts))
        report["calibration"] = calibrate(
            model,
            merged_tokenizer,
            list(calibration_texts),
            counts[base_size:merged_size],
            pieces,
            base_size,
            max_positions=calibration_positions,
            progress=progress,
        ).as_dict()
    if scale_inputs:
        report["input_norm"] = match_input_norms(model, base_size, merged_size)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _grow(model, base_size: int, merged_size: int, new_in, new_out, tied: bool) -> int:
    """Resize to ``merged_size`` rows (at least) and write the new rows; a tied model stays tied."""
    rows = max(merged_size, model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[base_size:merged_size] = new_in.to(weight.dtype)
        if not tied:
            out_weight = model.get_output_embeddings().weight
            out_weight[base_size:merged_size] = new_out.to(out_weight.dtype)
    if tied:
        model.tie_weights()
        if not is_tied(model):
            raise RedwhaleError("the LM head came untied while resizing")
    return rows


def _scales_input_rows(input_norm: str, method: str) -> bool:
    if input_norm not in ("base", "init"):
        raise RedwhaleError(f"input_norm must be 'base' or 'init', not {input_norm!r}")
    return input_norm == "base" and method != "random"


def untie(model) -> None:
    """Give a tied model its own LM head, a copy of the shared matrix (same outputs); ``tie_word_embeddings`` becomes
    false so that it is saved and loaded untied."""
    embed = model.get_input_embeddings().weight
    model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "get_text_config", lambda: model.config)()
    text_config.tie_word_embeddings = False
    model.get_output_embeddings().weight = torch.nn.Parameter(embed.detach().clone(), requires_grad=embed.requires_grad)
    if is_tied(model):
        raise RedwhaleError("could not untie the LM head from the input embeddings")


def match_input_norms(model, base_size: int, merged_size: int) -> dict[str, Any]:
    """Scale the new input rows (``base_size:merged_size``) to the mean norm of the base rows, untying a tied head
    first so that the output rows keep their init (written by hand: no library does this step)."""
    untied = is_tied(model)
    if untied:
        untie(model)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        target = weight[:base_size].float().norm(dim=1).mean()
        new = weight[base_size:merged_size]
        norms = new.float().norm(dim=1, keepdim=True)
        before = float(norms.mean())
        new.copy_((new.float() * (target / norms.clamp_min(1e-12))).to(weight.dtype))
    log.info("new input rows scaled to the base's mean norm %.3f (they averaged %.3f)", float(target), before)
    return {"untied": untied, "base_mean_norm": round(float(target), 4), "new_mean_norm_before": round(before, 4)}


def save_extended(model, tokenizer, out: Path, report: dict[str, Any]) -> Path:
    """Write a plain Hugging Face folder (atomically)."""

    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    if model.generation_config is None:
        model.generation_config = GenerationConfig.from_model_config(model.config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "init_report.json", report)
    return out


def calibration_data(
    tokenizer, texts: Iterable[str], sample_chars: int, seed: int = 0, reservoir: int = 4096
) -> tuple[list[str], torch.Tensor]:
    """A uniform random sample of ``reservoir`` documents of ``texts`` (streamed, reservoir sampling): their token
    counts (the frequency feature of ``calibrated`` init; a log-count needs no more than this, and counting a whole
    corpus costs minutes) and about ``sample_chars`` characters of them (documents cut at 2,000 characters) whose
    hidden states fit the offsets."""
    rng = random.Random(seed)
    kept: list[str] = []
    for seen, text in enumerate(texts, start=1):
        if len(kept) < reservoir:
            kept.append(text)
        elif (slot := rng.randrange(seen)) < reservoir:
            kept[slot] = text
    counts = count_tokens(tokenizer, kept)
    rng.shuffle(kept)
    sample, chars = [], 0
    for text in kept:
        if chars >= sample_chars:
            break
        sample.append(text[:2000])
        chars += len(sample[-1])
    return sample, counts
