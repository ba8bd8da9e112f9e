"""The extend phase as one function: load the base once, compare init methods before any training (when asked),
and save the model extended with the configured method (``redwhale model extend`` and ``redwhale run`` alike)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from redwhale.config.schema import ExtendSection
from redwhale.core.errors import TokenizerError
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.core.source import LoadOptions, load_model, load_tokenizer
from redwhale.models.compare import compare_init
from redwhale.models.extend import calibration_data, extend, save_extended
from redwhale.models.init import METHODS

log = logging.getLogger(__name__)


def load_merged_tokenizer(folder: Path, trust_remote_code: bool = False):
    """A merged tokenizer folder, or one clear error when it is not one (missing or broken files)."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TokenizerError(f"{folder} is not a usable tokenizer folder (merge one first): {first}") from None


def _methods(section: ExtendSection) -> list[str]:
    """The compared methods and the configured one; ``compare: auto`` is resolved by the caller, who knows the
    budget (:meth:`ExtendSection.compared_methods`)."""
    if section.compare == "auto":
        raise ValueError("extend_and_compare needs extend.compare resolved to a list of methods")
    return [*section.compare, section.init]


def extend_and_compare(
    base_spec: str,
    merged_dir: Path,
    section: ExtendSection,
    train_texts: Iterable[str],
    korean: Sequence[str],
    english: Sequence[str],
    model_out: Path | None,
    compare_out: Path | None,
    seed: int = 0,
    load: LoadOptions | None = None,
    progress: ProgressFactory = no_file_progress,
) -> dict[str, Any]:
    """Write the extended model to ``model_out`` and the comparison of ``section.compare`` to ``compare_out`` (either
    may be None). ``train_texts``: training text of the new language, sampled for the calibrated offsets."""
    load = load or LoadOptions()
    started = time.perf_counter()
    merged = load_merged_tokenizer(merged_dir, load.trust_remote_code)  # first: a broken folder fails at once
    base = load_model(base_spec, **load.model_kwargs(dtype="float32"))
    base_tokenizer = load_tokenizer(base_spec, **load.tokenizer_kwargs())
    methods = _methods(section)
    calibration: tuple[list[str], Any] = ([], None)
    if any(METHODS[m].calibrated for m in methods if m in METHODS):
        calibration = calibration_data(merged, train_texts, section.calibration_chars, seed)
    summary: dict[str, Any] = {"init": section.init}
    if section.compare and compare_out is not None:
        result = compare_init(
            base,
            base_tokenizer,
            merged,
            section.compare,
            korean,
            english,
            compare_out,
            calibration,
            seed,
            keep=(section.init, model_out) if model_out is not None else None,
            progress=progress,
            calibration_positions=section.calibration_positions,
            input_norm=section.input_norm,
        )
        summary["compare"] = {k: v.get("korean_vs_base") for k, v in result["rows"].items()}
    if model_out is not None and not model_out.is_dir():  # the comparison did not build the configured method
        model = copy.deepcopy(base)
        report = extend(
            model,
            base_tokenizer,
            merged,
            section.init,
            calibration_texts=calibration[0],
            counts=calibration[1],
            seed=seed,
            calibration_positions=section.calibration_positions,
            input_norm=section.input_norm,
        )
        save_extended(model, merged, model_out, report)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    log.info("extended %s to %d tokens (%s) in %.0f s", base_spec, len(merged), section.init, summary["seconds"])
    return summary
