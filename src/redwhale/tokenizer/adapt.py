"""The tokenizer phase as one function: sweep the sizes, choose one, merge it into the base.

How the size is chosen (``tokenizer.size``):

* a number: that size;
* ``knee``: the Kneedle knee of the (REC, RIC) curve over ``tokenizer.sizes`` (the paper's rule: where more
  vocabulary stops paying for itself in sequence length);
* ``auto`` (the default): the largest size the training budget can train. A new token's embedding and head rows
  only learn from the positions where it occurs, so each size is scored by how often its new tokens would occur in
  the planned training tokens: their held-out frequency per token (the sweep measures it) times the budget. ``auto``
  takes the largest measured size (``sizes``, then ``auto_sizes`` past them, up to 80,000) whose new tokens reach
  ``min_occurrences`` on average (or at a quantile: ``occurrence_quantile``), *past the knee* where the budget allows:
  with calibrated rows a larger vocabulary learned more Korean per unit of compute at every budget measured
  (``bench/cpt_explore.py`` r15/r16, SmolLM2, 40,960 training tokens: 8,000 / 20,000 (the knee) / 40,000 / 80,000
  new tokens reached 2.245 / 2.117 / 2.050 / 2.018 Korean bits per byte, each size 4-15% slower per step; see
  ``TokenizerSection.size``).
  When no swept size qualifies, sizes below the smallest swept one are measured too (halving down to 500) so that
  a small budget still gets a size. The rule, the budget and every size's expected occurrences are written to
  ``choice.json`` and the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from redwhale.config.schema import TokenizerSection
from redwhale.core.io import atomic_write_json
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.core.source import LoadOptions
from redwhale.tokenizer.merge import merge_tokenizers
from redwhale.tokenizer.sweep import QUANTILES, sweep

SMALLEST_AUTO_SIZE = 500


def ladder(sizes: list[int]) -> list[int]:
    """Sizes below the smallest swept size, halving down to :data:`SMALLEST_AUTO_SIZE`."""
    out, size = [], min(sizes) // 2
    while size >= SMALLEST_AUTO_SIZE:
        out.append(size)
        size //= 2
    return out


def _frequency_key(statistic: float | str) -> str:
    """The sweep's frequency key for ``occurrence_quantile``: ``mean``, or the quantile "a share ``q`` of new tokens
    reach it", i.e. the ``1 - q`` quantile (QUANTILES has every key)."""
    if statistic == "mean":
        return "mean"
    q = 1 - float(statistic)
    assert any(abs(q - x) < 1e-9 for x in QUANTILES), q
    return f"q{round(q * 100):02d}"


def describe_rule(choice: dict[str, Any], verb: str = "should occur") -> str:
    """``new tokens should occur >= K times on average`` (or ``at the 50% quantile``), from a ``choice.json``."""
    statistic = choice["occurrence_quantile"]
    where = "on average" if statistic == "mean" else f"at the {float(statistic):.0%} quantile"
    return f"new tokens {verb} >= {choice['min_occurrences']:g} times {where}"


def _expected(rows: list[dict[str, Any]], section: TokenizerSection, training_tokens: int) -> dict[int, float]:
    """Each size's expected occurrences, in ``training_tokens``, of its new tokens at the configured quantile."""
    key = _frequency_key(section.occurrence_quantile)
    return {r["size"]: r["new_token_frequency"].get(key, 0.0) * training_tokens for r in rows}


def _eligible(expected: dict[int, float], section: TokenizerSection) -> list[int]:
    return [s for s, v in expected.items() if v >= section.min_occurrences]


def smaller_sizes_if_needed(section: TokenizerSection, training_tokens: int):
    """For :func:`sweep`'s ``more_sizes``: the :func:`ladder` below the swept sizes, only when ``auto`` would find
    no swept size whose new tokens occur often enough (measuring them costs a pass over the held-out text per size,
    for nothing when a swept size is chosen)."""

    def more(rows: list[dict[str, Any]], knee: int) -> list[int]:
        return [] if _eligible(_expected(rows, section, training_tokens), section) else ladder(section.sizes)

    return more


def choose_size(result: dict[str, Any], section: TokenizerSection, training_tokens: int) -> dict[str, Any]:
    """The size to merge and why (see the module docstring)."""
    knee = result["chosen_size"]
    rows = result["rows"]
    expected = _expected(rows, section, training_tokens)
    choice: dict[str, Any] = {
        "mode": section.size if isinstance(section.size, str) else "fixed",
        "knee": knee,
        "training_tokens": training_tokens,
        "min_occurrences": section.min_occurrences,
        "occurrence_quantile": section.occurrence_quantile,
        "expected_occurrences": {str(s): round(v, 2) for s, v in expected.items()},
    }
    if isinstance(section.size, int):
        return {**choice, "size": section.size, "why": "tokenizer.size is set"}
    if section.size == "knee":
        return {**choice, "size": knee, "why": "the RIC/REC knee"}
    eligible = _eligible(expected, section)
    if not eligible:
        size = min(expected)
        return {**choice, "size": size, "why": f"no size reaches {section.min_occurrences:g} occurrences: the smallest"}
    size = max(eligible)
    largest = section.largest_size()
    why = f"the largest size whose {describe_rule(choice, 'occur')} in the budget ({training_tokens:,} tokens)"
    if size < largest:
        why += f"; larger ones are too many for it (the knee: {knee:,})"
    elif size != knee:
        why += f" (the knee: {knee:,})"
    return {**choice, "size": size, "why": why}


def adapt_tokenizer(
    base_spec: str,
    train_texts: Iterable[str],
    heldout: list[str],
    section: TokenizerSection,
    script: str,
    sweep_dir: Path,
    merged_dir: Path,
    seed: int,
    training_tokens: int,
    load: LoadOptions | None = None,
    progress: ProgressFactory = no_file_progress,
) -> dict[str, Any]:
    """Sweep into ``sweep_dir``, choose, merge into ``merged_dir``; the choice goes to ``choice.json`` beside them."""
    extra = [section.size] if isinstance(section.size, int) else section.auto_sizes if section.size == "auto" else []
    more = smaller_sizes_if_needed(section, training_tokens) if section.size == "auto" else None
    plans: list = []
    result = sweep(
        base_spec,
        train_texts,
        section,
        script,
        sweep_dir,
        seed,
        heldout,
        extra_sizes=extra,
        load=load,
        progress=progress,
        more_sizes=more,
        on_plan=plans.append,
    )
    choice = choose_size(result, section, training_tokens)
    report = merge_tokenizers(
        base_spec,
        sweep_dir / "new-tokenizer",
        merged_dir,
        script,
        section.pad_to_multiple_of,
        choice["size"],
        load,
        {"korean": heldout[:200]},
        full_plan=plans[0],
    )
    row = next((r for r in result["rows"] if r["size"] == choice["size"]), None)
    choice.update(
        added_tokens=report["added_tokens"],
        merged_size=report["merged_size"],
        chars_per_token=row["chars_per_token"] if row else None,
        base_chars_per_token=result["base_chars_per_token"],
        audit=report["audit"],
    )
    atomic_write_json(merged_dir.parent / "choice.json", choice)
    return {"chosen_size": choice["size"], "added_tokens": report["added_tokens"], "choice": choice}
