"""``redwhale model compare-init``: every initialisation method, measured before any training.

For each method the base model is extended with the merged tokenizer and scored in bits per byte on held-out Korean
and English text, beside the base model with its own tokenizer (same bytes, so the numbers compare directly).
Writes ``compare_init.json`` and ``compare_init.md``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redwhale.core.bpb import bits_per_byte
from redwhale.core.io import atomic_write_json, atomic_write_text
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.models.extend import extend, is_tied, save_extended
from redwhale.models.init import METHODS

log = logging.getLogger(__name__)


def compare_init(
    base,
    base_tokenizer,
    merged,
    methods: Sequence[str],
    korean: Sequence[str],
    english: Sequence[str],
    out: Path,
    calibration: tuple[list[str], Any] = ([], None),
    seed: int = 0,
    window: int = 1024,
    keep: tuple[str, Path] | None = None,
    progress: ProgressFactory = no_file_progress,
    calibration_positions: int = 2048,
    input_norm: str = "base",
) -> dict[str, Any]:
    """Extend a copy of ``base`` with each init method and score it; write and return the table. ``calibration`` is
    the (sample, token counts) of :func:`calibration_data`; the model of method ``keep[0]`` is also saved to
    ``keep[1]`` (as ``redwhale model extend`` would), so a run does not initialise it twice."""
    started = time.perf_counter()
    with progress("init comparison", total=len(methods) + 1, unit="model") as bar:
        rows: dict[str, Any] = {"base": _score(base, base_tokenizer, korean, english, window)}
        bar.update(1, method="base")
        for method in methods:
            options = {"calibration_positions": calibration_positions, "input_norm": input_norm}
            rows[method] = _one_method(
                base, base_tokenizer, merged, method, korean, english, calibration, seed, window, progress, options
            )
            if keep is not None and method == keep[0] and "report" in rows[method]:
                save_extended(rows[method].pop("model"), merged, keep[1], rows[method]["report"])
            rows[method].pop("model", None)
            rows[method].pop("report", None)
            bar.update(1, method=method)
    for row in rows.values():
        if "korean_bpb" in row:
            row["korean_vs_base"] = row["korean_bpb"] / rows["base"]["korean_bpb"]
            row["english_vs_base"] = row["english_bpb"] / rows["base"]["english_bpb"]
    result = {
        "tied": is_tied(base),
        "rows": rows,
        "korean_texts": len(korean),
        "korean_bytes": rows["base"]["korean_bytes"],
        "english_texts": len(english),
        "english_bytes": rows["base"]["english_bytes"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare_init.json", result)
    atomic_write_text(out / "compare_init.md", compare_markdown(result))
    return result


def _one_method(
    base, base_tokenizer, merged, method, korean, english, calibration, seed, window, progress, options: dict[str, Any]
) -> dict[str, Any]:
    if METHODS[method].needs_untied_head and is_tied(base):
        return {"skipped": f"{method} needs an untied LM head"}
    model = copy.deepcopy(base)
    report = extend(
        model,
        base_tokenizer,
        merged,
        method,
        calibration_texts=calibration[0],
        counts=calibration[1],
        seed=seed,
        progress=progress,
        **options,
    )
    row = _score(model, merged, korean, english, window)
    if "calibration" in report:
        row["calibration"] = report["calibration"]
    log.info("%s: Korean %.4f, English %.4f bits/byte", method, row["korean_bpb"], row["english_bpb"])
    return {**row, "model": model, "report": report}


def _score(model, tokenizer, korean: Sequence[str], english: Sequence[str], window: int) -> dict[str, Any]:
    ko = bits_per_byte(model, tokenizer, korean, window=window)
    en = bits_per_byte(model, tokenizer, english, window=window)
    return {
        "korean_bpb": ko.bits_per_byte,
        "english_bpb": en.bits_per_byte,
        "korean_tokens": ko.tokens,
        "english_tokens": en.tokens,
        "korean_bytes": ko.bytes,
        "english_bytes": en.bytes,
    }


def compare_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Initialisation of new tokens, before any training",
        "",
        f"Held-out Korean: {result['korean_texts']} documents, {result['korean_bytes']:,} bytes; English: "
        f"{result['english_texts']} documents, {result['english_bytes']:,} bytes. Head: "
        f"{'tied' if result['tied'] else 'untied'}.",
        "",
        "| method | Korean bits/byte | vs base | English bits/byte | vs base | Korean tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        if "skipped" in row:
            lines.append(f"| {name} | | | | | {row['skipped']} |")
            continue
        lines.append(
            f"| {name} | {row['korean_bpb']:.4f} | {row['korean_vs_base']:.3f}x | {row['english_bpb']:.4f} | "
            f"{(row['english_vs_base'] - 1) * 100:+.2f}% | {row['korean_tokens']:,} |"
        )
    return "\n".join(lines) + "\n"
