"""``redwhale model compare-init``: every initialisation method, measured before any training.

For each method the base model is extended with the merged tokenizer and scored in bits per byte on held-out Korean
and English text, beside the base model with its own tokenizer (same bytes, so the numbers compare directly).
Writes ``compare_init.json`` and ``compare_init.md``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from redwhale.evaluate.bpb import bits_per_byte
from redwhale.models.extend import calibration_data, extend, is_tied, save_extended
from redwhale.rundir import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def compare_init(
    base_spec: str,
    tokenizer_dir: str | Path,
    methods: Sequence[str],
    korean: Sequence[str],
    english: Sequence[str],
    out: Path,
    calibration_texts: Iterable[str] = (),
    calibration_chars: int = 30_000,
    seed: int = 0,
    window: int = 1024,
    cache_dir: str | Path | None = None,
    save_method: str | None = None,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure each init method; return and write the table. The model of ``save_method`` is also saved to
    ``save_dir`` (as ``redwhale model extend`` would), so a run does not initialise it twice."""
    from transformers import AutoTokenizer

    from redwhale.models.source import load_model, load_tokenizer

    base = load_model(base_spec, dtype="float32", cache_dir=cache_dir)
    base_tokenizer = load_tokenizer(base_spec, cache_dir=cache_dir)
    merged = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    started = time.perf_counter()
    rows: dict[str, Any] = {"base": _score(base, base_tokenizer, korean, english, window)}
    log.info("base: Korean %.4f, English %.4f bits/byte", rows["base"]["korean_bpb"], rows["base"]["english_bpb"])
    sample, counts = ([], None)
    if "calibrated" in methods:
        sample, counts = calibration_data(merged, calibration_texts, calibration_chars, seed)
    for method in methods:
        if method == "eeve" and is_tied(base):
            rows[method] = {"skipped": "eeve needs an untied LM head"}
            continue
        model = copy.deepcopy(base)
        report = extend(model, base_tokenizer, merged, method, calibration_texts=sample, counts=counts, seed=seed)
        rows[method] = _score(model, merged, korean, english, window)
        if "calibration" in report:
            rows[method]["calibration"] = report["calibration"]
        if method == save_method and save_dir is not None:
            report.update(base=base_spec, tokenizer=str(tokenizer_dir))
            save_extended(model, merged, Path(save_dir), report)
        log.info(
            "%s: Korean %.4f, English %.4f bits/byte", method, rows[method]["korean_bpb"], rows[method]["english_bpb"]
        )
        del model
    for row in rows.values():
        if "korean_bpb" in row:
            row["korean_vs_base"] = row["korean_bpb"] / rows["base"]["korean_bpb"]
            row["english_vs_base"] = row["english_bpb"] / rows["base"]["english_bpb"]
    result = {
        "base": base_spec,
        "tokenizer": str(tokenizer_dir),
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
        f"# Initialisation of new tokens, before any training ({result['base']})",
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
