"""``redwhale tokenizer sweep``: how much each vocabulary size buys, and which size to take.

For each size, on held-out text of the target language:

* tokens added to the base (after removing what the base already has),
* RIC, the Ratio of Input Complexity: tokens with the merged tokenizer / tokens with the base,
* REC, the Ratio of Embedding Complexity: merged vocabulary size / base vocabulary size,
* characters per token, and the merged tokenizer's token count against the standalone tokenizer's (a check of the
  merge, measured on the first ``DIAGNOSTIC_CHARS`` held-out characters: a ratio, stable on a sample, and half of
  the sweep's time when measured on all of it).

One training at the largest size serves every size: a BPE's merges at a smaller size are a prefix of its merges at a
larger one, and the merge plan (:mod:`redwhale.tokenizer.bpe`) is built in the same order, so each size is a prefix
of one plan.

The knee (documented rule): Kneedle on the (REC, RIC) curve. Both axes are scaled to [0, 1] over the swept sizes; the
chosen size is the one whose point lies farthest below the straight line from the smallest to the largest size, i.e.
where adding vocabulary stops paying for itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from tokenizers import Tokenizer

from redwhale.config.schema import TokenizerSection
from redwhale.core.errors import DataError, TokenizerError
from redwhale.core.io import atomic_write_json, atomic_write_text
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.core.scripts import Script, get_script
from redwhale.core.source import LoadOptions
from redwhale.core.text import split_of
from redwhale.tokenizer.base import load_base
from redwhale.tokenizer.merge import NewTokenizer, build, plan
from redwhale.tokenizer.train import train_new

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the non-interactive backend)

log = logging.getLogger(__name__)


@dataclass
class SweepRow:
    size: int
    added_tokens: int
    merged_vocab: int
    rec: float
    ric: float
    chars_per_token: float
    merged_tokens: int
    merged_vs_standalone: float
    merged_vs_standalone_script_words: float
    new_token_frequency: dict[str, float]


class HeldOut:
    """Splits a text stream: yields training texts, keeps held-out texts."""

    def __init__(self, texts: Iterable[str], seed: int, fraction: float, script: Script, limit_chars: int):
        self._texts = texts
        self.seed, self.fraction, self.script, self.limit_chars = seed, fraction, script, limit_chars
        self.texts: list[str] = []
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            if split_of(text, self.seed, self.fraction) == "heldout":
                if self.chars < self.limit_chars and self.script.in_text(text):
                    self.texts.append(text)
                    self.chars += len(text)
            else:
                yield text


def _standalone_prefix(new: NewTokenizer, size: int):
    """The standalone tokenizer cut to its first ``size`` tokens (a BPE's smaller sizes are prefixes)."""
    # a copy of the two levels replaced below, not of the whole tokenizer (a JSON round trip of the 80,000-token
    # tokenizer cost ~0.3 s of each size's ~1.5 s)
    data = {**new.data, "model": dict(new.data["model"])}
    vocab = data["model"]["vocab"]
    keep = new.candidates_for_size(size)
    if new.kind == "bytelevel":
        data["model"]["merges"] = data["model"]["merges"][:keep]
        data["model"]["vocab"] = {t: i for t, i in vocab.items() if i < size}
    else:
        kept = set(new.candidates()[:keep])
        order = sorted(vocab.items(), key=lambda kv: kv[1])
        data["model"]["vocab"] = {
            t: i for i, (t, _) in enumerate([(t, i) for t, i in order if t in kept or len(t) == 1 or t.startswith("<")])
        }
        merged = data["model"]["vocab"]
        data["model"]["merges"] = [
            m for m in data["model"]["merges"] if "".join(m if isinstance(m, list) else m.split(" ", 1)) in merged
        ]
    return Tokenizer.from_str(json.dumps(data))


def _count(backend, texts: list[str]) -> int:
    return sum(len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False))


def _script_words(texts: list[str], pre_tokenizer, script: Script) -> list[str]:
    words = []
    for text in texts:
        for _, (start, end) in pre_tokenizer.pre_tokenize_str(text):
            if script.in_text(text, start, end):
                words.append(text[start:end])
    return words


def knee(rows: list[SweepRow]) -> int:
    """Kneedle: the size whose (REC, RIC) point is farthest below the chord from the first to the last point."""
    if len(rows) < 3:
        return rows[-1].size
    xs = [r.rec for r in rows]
    ys = [r.ric for r in rows]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = [(x - x0) / (x1 - x0 or 1.0) for x in xs]
    sy = [(y - y0) / (y1 - y0 or 1.0) for y in ys]
    first, last = (sx[0], sy[0]), (sx[-1], sy[-1])
    best, best_gap = rows[-1].size, float("-inf")
    for row, x, y in zip(rows, sx, sy, strict=True):
        t = (x - first[0]) / ((last[0] - first[0]) or 1.0)
        gap = (first[1] + t * (last[1] - first[1])) - y
        if gap > best_gap:
            best, best_gap = row.size, gap
    return best


def _tokens_and_occurrences(backend, heldout: list[str], base_size: int, merged_size: int):
    """Tokens of the held-out text, and how often new tokens occur per token of it: quantiles over the new tokens
    (unseen ones count 0) and their mean (``mean``: unlike a quantile, it does not fall to 0 once most new tokens are
    too rare to occur in the held-out text). One encoding pass; one bincount over all ids (one per document cost more
    than the encoding at a large vocabulary)."""
    encodings = backend.encode_batch(heldout, add_special_tokens=False)
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64)
    counts = np.bincount(ids, minlength=merged_size)[:merged_size]
    per_token = np.sort(counts[base_size:]) / max(len(ids), 1)
    quantiles = (
        {f"q{round(q * 100):02d}": float(np.quantile(per_token, q)) for q in QUANTILES} if len(per_token) else {}
    )
    if len(per_token):
        quantiles["mean"] = float(per_token.mean())
    return len(ids), quantiles


QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


DIAGNOSTIC_CHARS = 100_000


def _measure(
    base,
    full_plan,
    new,
    size: int,
    heldout: list[str],
    sample: list[str],
    words: list[str],
    base_tokens: int,
    chars: int,
):
    """One row of the sweep, or None when ``size`` adds no token (a size at or below what the base has). The merged
    tokenizer against the standalone one is measured on ``sample`` (and its ``words``), the rest on all ``heldout``."""
    merged = build(base, full_plan, new.candidates_for_size(size))
    if not merged.added:
        return None
    backend = merged.backend()
    standalone = _standalone_prefix(new, size)
    merged_tokens, frequency = _tokens_and_occurrences(
        backend, heldout, merged.base_size, merged.base_size + len(merged.added)
    )
    return SweepRow(
        size=size,
        added_tokens=len(merged.added),
        merged_vocab=merged.size,
        rec=merged.size / merged.base_size,
        ric=merged_tokens / base_tokens,
        chars_per_token=chars / merged_tokens,
        merged_tokens=merged_tokens,
        merged_vs_standalone=_count(backend, sample) / max(_count(standalone, sample), 1),
        merged_vs_standalone_script_words=_count(backend, words) / max(_count(standalone, words), 1),
        new_token_frequency=frequency,
    )


def sweep(
    base_spec: str,
    texts: Iterable[str],
    section: TokenizerSection,
    script_name: str,
    out: Path,
    seed: int = 0,
    heldout_texts: list[str] | None = None,
    heldout_fraction: float = 0.05,
    extra_sizes: Sequence[int] = (),
    load: LoadOptions | None = None,
    progress: ProgressFactory = no_file_progress,
    more_sizes: Callable[[list[dict[str, Any]], int], Sequence[int]] | None = None,
    on_plan: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Train once at the largest size, measure every size (and ``extra_sizes``, see :func:`_trained`), choose the knee
    among ``section.sizes``; write ``sweep.json``, ``sweep.md``, ``sweep.png`` and the standalone tokenizer
    (``new-tokenizer/``) into ``out``. Without ``heldout_texts``, ``heldout_fraction`` of ``texts`` is held out.
    ``more_sizes(rows, knee)``, given the measured rows (as in ``sweep.json``) and the knee, names sizes below the
    largest to measure as well (``tokenizer.size: auto`` asks for smaller sizes only when every swept size has too
    many new tokens for the budget). ``on_plan(plan)`` gets the merge plan of every candidate (the merge reuses it)."""
    sizes = sorted(set(section.sizes))
    script = get_script(script_name)
    base_hf, base = load_base(base_spec, load)
    started = time.perf_counter()
    splitter = HeldOut(
        texts, seed, heldout_fraction if heldout_texts is None else 0.0, script, section.heldout_max_chars
    )
    training = _capped(splitter, section.train_chars)
    measured = sorted(set(sizes) | set(extra_sizes))
    new = train_new(
        training, base, max(measured), script, out / "new-tokenizer", section.train_on, section.min_frequency
    )
    measured = _trained(measured, section, new)
    heldout = _cap_chars(heldout_texts if heldout_texts is not None else splitter.texts, section.heldout_max_chars)
    if not heldout:
        raise DataError(f"no held-out {script.name} text: the corpus is too small for a {heldout_fraction:.0%} split")
    trained = time.perf_counter()
    full_plan = plan(base, new, script)
    if on_plan is not None:
        on_plan(full_plan)
    planned = time.perf_counter()
    sample = _cap_chars(heldout, DIAGNOSTIC_CHARS)
    words = _script_words(sample, base_hf.backend_tokenizer.pre_tokenizer, script)
    base_tokens = _count(base_hf.backend_tokenizer, heldout)
    chars = sum(len(t) for t in heldout)

    def measure(size: int) -> SweepRow | None:
        return _measure(base, full_plan, new, size, heldout, sample, words, base_tokens, chars)

    rows = _measure_sizes(measured, sizes, measure, progress)
    chosen = knee([r for r in rows if r.size in sizes])
    if more_sizes is not None:  # sizes worth measuring only in view of the first ones (smaller than any measured)
        more = sorted(set(more_sizes([asdict(r) for r in rows], chosen)) - set(measured))
        rows = sorted(rows + _measure_sizes(more, sizes, measure, progress), key=lambda r: r.size)
    timing = {"train": trained - started, "plan": planned - trained, "measure": time.perf_counter() - planned}
    result = _result(base_spec, base, script, heldout, chars, base_tokens, section, training, rows, sizes, chosen)
    result.update(candidate_counts=dict(full_plan.counts), seconds={k: round(v, 2) for k, v in timing.items()})
    result["diagnostic_characters"] = sum(len(t) for t in sample)
    return _written(result, out)


def _written(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """``result`` written as ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out``."""
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", sweep_markdown(result))
    plot_sweep(result, out / "sweep.png")
    return result


def _trained(measured: list[int], section: TokenizerSection, new: NewTokenizer) -> list[int]:
    """The sizes to measure, less the extra sizes (not swept nor set) larger than what the text trained: they would
    repeat the largest (``tokenizer.auto_sizes`` on a small corpus)."""
    return [s for s in measured if s in section.sizes or s == section.size or s <= new.size]


def _measure_sizes(
    sizes: Sequence[int], swept: Sequence[int], measure: Callable[[int], SweepRow | None], progress: ProgressFactory
) -> list[SweepRow]:
    """The rows of ``sizes`` (a swept size that adds no token is an error; another one is left out)."""
    rows: list[SweepRow] = []
    if not sizes:
        return rows
    with progress("vocabulary sweep", total=len(sizes), unit="size") as bar:
        for size in sizes:
            row = measure(size)
            if row is None and size in swept:
                raise TokenizerError(f"size {size} adds no token: it is not larger than what the base already has")
            if row is not None:
                rows.append(row)
            bar.update(1, size=size, ric=row.ric if row else None)
    return rows


def _result(base_spec, base, script, heldout, chars, base_tokens, section, training, rows, sizes, chosen) -> dict:
    return {
        "base": base_spec,
        "kind": base.kind,
        "script": script.name,
        "base_vocab": base.size,
        "heldout_documents": len(heldout),
        "heldout_characters": chars,
        "base_tokens": base_tokens,
        "base_chars_per_token": chars / base_tokens,
        "train_on": section.train_on,
        "training_characters": training.chars,
        "rows": [asdict(r) for r in rows],
        "swept_sizes": sizes,
        "chosen_size": chosen,
        "knee_rule": "kneedle on (REC, RIC): farthest point below the chord from the smallest to the largest size",
    }


class _capped:
    """The texts of a stream up to ``limit`` characters in all (all of them when None), counting what it gave."""

    def __init__(self, texts: Iterable[str], limit: int | None):
        self.texts, self.limit, self.chars = texts, limit, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if self.limit is not None and self.chars >= self.limit:
                return
            self.chars += len(text)
            yield text


def _cap_chars(texts: list[str], limit: int) -> list[str]:
    out, chars = [], 0
    for text in texts:
        if chars >= limit:
            break
        out.append(text)
        chars += len(text)
    return out


def sweep_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Vocabulary sweep ({result['script']}, base {result['base']})",
        "",
        f"Held-out: {result['heldout_documents']:,} documents, {result['heldout_characters']:,} characters; "
        f"base: {result['base_vocab']:,} tokens, {result['base_chars_per_token']:.3f} characters per token. "
        f"Merged / standalone: on the first {result.get('diagnostic_characters', result['heldout_characters']):,} "
        "characters.",
        "",
        "| size | added | merged vocab | REC | RIC | chars/token | merged / standalone | (script words) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        mark = " **(chosen)**" if row["size"] == result["chosen_size"] else ""
        lines.append(
            f"| {row['size']:,}{mark} | {row['added_tokens']:,} | {row['merged_vocab']:,} | {row['rec']:.3f} | "
            f"{row['ric']:.3f} | {row['chars_per_token']:.3f} | {row['merged_vs_standalone']:.3f} | "
            f"{row['merged_vs_standalone_script_words']:.3f} |"
        )
    lines += ["", f"Chosen size: {result['chosen_size']:,} ({result['knee_rule']})."]
    return "\n".join(lines) + "\n"


def plot_sweep(result: dict[str, Any], path: Path) -> Path:
    rows = result["rows"]
    sizes = [r["size"] for r in rows]
    fig, left = plt.subplots(figsize=(7, 4), dpi=120)
    left.plot(sizes, [r["ric"] for r in rows], "o-", color="tab:blue", label="RIC (tokens merged / base)")
    left.set_xlabel("new tokenizer size (tokens)")
    left.set_ylabel("RIC", color="tab:blue")
    right = left.twinx()
    right.plot(sizes, [r["rec"] for r in rows], "s--", color="tab:red", label="REC (vocab merged / base)")
    right.set_ylabel("REC", color="tab:red")
    left.axvline(result["chosen_size"], color="gray", linestyle=":", label=f"chosen: {result['chosen_size']:,}")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    left.set_title(f"Vocabulary sweep: {result['script']} on {Path(str(result['base'])).name}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the axes
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
