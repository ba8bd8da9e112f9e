"""``redwhale eval``: benchmark tasks, Korean and English bits per byte, tokenizer efficiency and greedy generations
in one ``results.json``; base and adapted side by side (``redwhale eval compare``)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from redwhale.config.schema import EvalSection
from redwhale.core.bpb import bits_per_byte
from redwhale.core.environment import versions
from redwhale.core.errors import DataError
from redwhale.core.io import atomic_write_json, atomic_write_text
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.core.source import LoadOptions, load_model, load_tokenizer
from redwhale.evaluate.benchmarks import run_benchmarks

log = logging.getLogger(__name__)


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
            "tokens_per_1000_chars": 1000 * tokens / chars,
            "vocab_size": len(tok),
        }

    result = {"model": measure(tokenizer)}
    if base_tokenizer is not None:
        result["base"] = measure(base_tokenizer)
        result["ric"] = result["model"]["tokens"] / result["base"]["tokens"]
    return result


@torch.no_grad()
def generations(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict[str, str]]:
    """Greedy continuations of ``prompts`` (a light repetition penalty, so that small models do not loop)."""
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        generated = model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            repetition_penalty=1.1,
        )
        out.append(
            {"prompt": prompt, "output": tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)}
        )
    return out


def _bpb(model, tokenizer, name: str, texts: list[str], section: EvalSection, progress, results: dict) -> None:
    score = bits_per_byte(model, tokenizer, texts, window=section.window, progress=progress, what=f"{name} bits/byte")
    results[f"{name}_bpb"] = score.bits_per_byte
    results["data"][f"{name}_text"] = {
        "documents": len(texts),
        "bytes": score.bytes,
        "tokens": score.tokens,
        "sha256": _digest(texts),
    }
    log.info("%s bits per byte: %.4f", name, score.bits_per_byte)


def evaluate(
    model_spec: str,
    out: Path,
    korean: list[str],
    english: list[str],
    section: EvalSection,
    benchmarks: bool = False,
    base_tokenizer: str | None = None,
    load: LoadOptions | None = None,
    progress: ProgressFactory = no_file_progress,
    label: str = "model",
) -> dict[str, Any]:
    """Evaluate one model and write ``out`` (JSON)."""
    if not (korean or english or benchmarks):
        raise DataError("nothing to evaluate: give Korean or English text, or benchmark tasks")
    load = load or LoadOptions()
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_spec, **load.model_kwargs(device=device))
    tokenizer = load_tokenizer(model_spec, **load.tokenizer_kwargs())
    model.eval()
    results: dict[str, Any] = {
        "label": label,
        "model": str(model_spec),
        "device": device,
        "dtype": str(model.dtype).replace("torch.", ""),
        "versions": versions(),
        "data": {},
    }
    for name, texts in (("korean", korean), ("english", english)):
        if texts:
            _bpb(model, tokenizer, name, texts, section, progress, results)
    if korean:
        base = load_tokenizer(base_tokenizer, **load.tokenizer_kwargs()) if base_tokenizer else None
        results["tokenizer"] = tokenizer_efficiency(tokenizer, korean, base)
    if benchmarks:
        started_tasks = time.perf_counter()
        with progress(f"{label}: benchmarks", total=len(section.tasks), unit="task"):
            results["benchmarks"] = run_benchmarks(
                model,
                tokenizer,
                section.tasks,
                section.data,
                section.split,
                section.shots,
                section.limit,
                section.batch_size,
            )
        results["data"]["benchmarks"] = {
            "source": str(section.data or "Hub"),
            "split": section.split,
            "limit": section.limit,
        }
        results["benchmark_seconds"] = round(time.perf_counter() - started_tasks, 1)
    prompts = [*section.korean_prompts, *section.english_prompts]
    results["generations"] = generations(model, tokenizer, prompts, section.max_new_tokens) if prompts else []
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out, results)
    return results


def evaluate_pair(
    base_spec: str,
    adapted: Path,
    korean: list[str],
    english: list[str],
    section: EvalSection,
    benchmarks: dict[str, Any],
    base_json: Path,
    adapted_json: Path,
    compare_md: Path,
    load: LoadOptions | None = None,
    progress: ProgressFactory = no_file_progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Base and adapted model on the same text and tasks; writes both results and their comparison."""
    run = bool(benchmarks["run"])
    base = evaluate(base_spec, base_json, korean, english, section, run, load=load, progress=progress, label="base")
    adapted_results = evaluate(
        str(adapted),
        adapted_json,
        korean,
        english,
        section,
        run,
        base_tokenizer=base_spec,
        load=load,
        progress=progress,
        label="adapted",
    )
    for results, path in ((base, base_json), (adapted_results, adapted_json)):
        results["benchmarks_decision"] = benchmarks
        atomic_write_json(path, results)
    atomic_write_text(compare_md, compare(base, adapted_results))
    return base, adapted_results


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """Every number of a results file as ``metric -> value`` (benchmarks as ``<task>/<k>-shot/<metric>``)."""
    flat: dict[str, float] = {}
    for key in ("korean_bpb", "english_bpb"):
        if key in results:
            flat[key] = results[key]
    tok = results.get("tokenizer", {}).get("model")
    if tok:
        flat["korean_chars_per_token"] = tok["chars_per_token"]
    for shots, by_task in results.get("benchmarks", {}).items():
        for task, metrics in by_task.items():
            for metric, value in metrics.items():
                if metric != "examples":
                    flat[f"{task}/{shots}/{metric}"] = value
    return flat


LOWER_IS_BETTER = ("bpb",)


def compare(base: dict[str, Any], adapted: dict[str, Any]) -> str:
    """A Markdown table: each metric for both models and the change."""
    a, b = flatten(base), flatten(adapted)
    lines = [
        f"| metric | {base.get('label', 'base')} | {adapted.get('label', 'adapted')} | change | better |",
        "|---|---:|---:|---:|:---:|",
    ]
    for key in sorted(set(a) | set(b), key=lambda k: ("/" in k, k)):
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
    table = compare(json.loads(base.read_text(encoding="utf-8")), json.loads(adapted.read_text(encoding="utf-8")))
    if out is not None:
        atomic_write_text(out, table)
    return table
