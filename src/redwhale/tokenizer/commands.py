"""The tokenizer commands as functions: read the corpus (streamed, malformed lines counted), then train or sweep."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redwhale.config.schema import CorpusInput, TokenizerSection
from redwhale.core.io import atomic_dir, atomic_write_json
from redwhale.core.scripts import get_script
from redwhale.core.source import LoadOptions
from redwhale.corpus.readers import ReadReport, iter_texts
from redwhale.tokenizer.base import load_base
from redwhale.tokenizer.sweep import sweep
from redwhale.tokenizer.train import train_new


def train_command(
    base_spec: str,
    inputs: list[CorpusInput],
    section: TokenizerSection,
    size: int,
    out: Path,
    script: str = "hangul",
    load: LoadOptions | None = None,
) -> dict[str, Any]:
    """Train the new-language tokenizer of ``size`` tokens and write it (atomically) to ``out``."""
    _, base = load_base(base_spec, load)
    report = ReadReport()
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        new = train_new(
            iter_texts(inputs, report), base, size, get_script(script), tmp, section.train_on, section.min_frequency
        )
        summary = {
            "base": base_spec,
            "kind": new.kind,
            "size": new.size,
            "script": script,
            "train_on": section.train_on,
            "input": report.summary(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        atomic_write_json(tmp / "train_report.json", summary)
    report.log()
    return summary


def sweep_command(
    base_spec: str,
    inputs: list[CorpusInput],
    section: TokenizerSection,
    out: Path,
    script: str = "hangul",
    seed: int = 0,
    heldout_fraction: float = 0.05,
    load: LoadOptions | None = None,
) -> dict[str, Any]:
    """Sweep ``section.sizes`` on the corpus; outputs go to ``out`` (written atomically as one folder)."""
    report = ReadReport()
    with atomic_dir(out) as tmp:
        result = sweep(
            base_spec,
            iter_texts(inputs, report),
            section,
            script,
            tmp,
            seed,
            heldout_fraction=heldout_fraction,
            load=load,
        )
        result["input"] = report.summary()
        atomic_write_json(tmp / "sweep.json", result)
    report.log()
    return result
