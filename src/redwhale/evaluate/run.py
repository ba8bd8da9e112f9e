"""``redwhale eval``: KoBEST, Korean and English bits per byte, and tokenizer efficiency, in one ``results.json``;
``redwhale eval compare``: two results side by side, with the change per metric."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import time
from pathlib import Path
from typing import Any

from redwhale.errors import DataError
from redwhale.evaluate.bpb import bits_per_byte
from redwhale.rundir import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    out = {}
    for package in ("redwhale", "torch", "transformers", "tokenizers", "lm_eval", "peft", "accelerate"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def tokenizer_efficiency(tokenizer, texts: list[str], base_tokenizer=None) -> dict[str, Any]:
    """Characters and bytes per token of ``tokenizer`` (and the base's) on the same text."""

    def measure(tok) -> dict[str, float]:
        tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
        chars = sum(len(t) for t in texts)
        data = sum(len(t.encode("utf-8")) for t in texts)
        return {
            "tokens": tokens,
            "chars_per_token": chars / tokens,
            "bytes_per_token": data / tokens,
            "vocab_size": len(tok),
        }

    result = {"model": measure(tokenizer)}
    if base_tokenizer is not None:
        result["base"] = measure(base_tokenizer)
        result["ric"] = result["model"]["tokens"] / result["base"]["tokens"]
    return result


def evaluate(
    model_spec: str,
    out: Path,
    *,
    korean: list[str] | None = None,
    english: list[str] | None = None,
    kobest: bool = True,
    kobest_data: Path | None = None,
    tasks: list[str] | None = None,
    shots: list[int] | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    base_tokenizer: str | None = None,
    window: int = 1024,
    cache_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one model and write ``out`` (JSON). Every part is optional except that something must be asked."""
    import torch

    from redwhale.evaluate.kobest import TASKS, evaluate_kobest
    from redwhale.models.source import load_model, load_tokenizer

    if not (korean or english or kobest):
        raise DataError("nothing to evaluate: give Korean or English text, or KoBEST")
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_spec, dtype="auto", device=device, cache_dir=cache_dir)
    tokenizer = load_tokenizer(model_spec, cache_dir=cache_dir)
    model.eval()
    results: dict[str, Any] = {
        "model": model_spec,
        "device": device,
        "dtype": str(model.dtype).replace("torch.", ""),
        "versions": versions(),
        "data": {},
        **(extra or {}),
    }
    for name, texts in (("korean", korean), ("english", english)):
        if texts:
            score = bits_per_byte(model, tokenizer, texts, window=window)
            results[f"{name}_bpb"] = score.bits_per_byte
            results["data"][f"{name}_text"] = {
                "documents": len(texts),
                "bytes": score.bytes,
                "tokens": score.tokens,
                "sha256": _digest(texts),
            }
            log.info("%s bits per byte: %.4f", name, score.bits_per_byte)
    if korean:
        base = load_tokenizer(base_tokenizer, cache_dir=cache_dir) if base_tokenizer else None
        results["tokenizer"] = tokenizer_efficiency(tokenizer, korean, base)
    if kobest:
        task_list = tasks or list(TASKS)
        kobest_started = time.perf_counter()
        results["kobest"] = evaluate_kobest(
            model, tokenizer, task_list, shots or [0], kobest_data, split, limit, batch_size
        )
        results["data"]["kobest"] = {
            "source": str(kobest_data) if kobest_data else "hub: skt/kobest_v1",
            "split": split,
            "limit": limit,
        }
        results["kobest_seconds"] = round(time.perf_counter() - kobest_started, 1)
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out, results)
    return results


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """Every number of a results file as ``metric -> value`` (KoBEST as ``kobest/<shots>-shot/<task>/<metric>``)."""
    flat: dict[str, float] = {}
    for key in ("korean_bpb", "english_bpb"):
        if key in results:
            flat[key] = results[key]
    tok = results.get("tokenizer", {}).get("model")
    if tok:
        flat["korean_chars_per_token"] = tok["chars_per_token"]
    for shots, by_task in results.get("kobest", {}).items():
        for task, metrics in by_task.items():
            for metric in ("acc", "acc_norm", "f1"):
                if metric in metrics:
                    flat[f"kobest/{shots}-shot/{task}/{metric}"] = metrics[metric]
    return flat


LOWER_IS_BETTER = ("bpb",)


def compare(base: dict[str, Any], adapted: dict[str, Any]) -> str:
    """A Markdown table: each metric for both models and the change."""
    a, b = flatten(base), flatten(adapted)
    lines = [
        f"| metric | {base.get('label', 'base')} | {adapted.get('label', 'adapted')} | change | better |",
        "|---|---:|---:|---:|:---:|",
    ]
    for key in sorted(set(a) | set(b), key=lambda k: (k.startswith("kobest"), k)):
        left, right = a.get(key), b.get(key)
        if left is None or right is None:
            lines.append(f"| {key} | {_fmt(left)} | {_fmt(right)} | | |")
            continue
        change = right - left
        relative = f" ({change / left:+.1%})" if left else ""
        better = (change < 0) if key.endswith(LOWER_IS_BETTER) else (change > 0)
        lines.append(
            f"| {key} | {_fmt(left)} | {_fmt(right)} | {change:+.4f}{relative} | "
            f"{'yes' if better else ('=' if change == 0 else 'no')} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def compare_files(base: Path, adapted: Path, out: Path | None = None) -> str:
    import json

    table = compare(json.loads(base.read_text(encoding="utf-8")), json.loads(adapted.read_text(encoding="utf-8")))
    if out is not None:
        atomic_write_text(out, table)
    return table
