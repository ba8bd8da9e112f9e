"""``redwhale tokenizer sweep``: how much each vocabulary size buys, and which size to take.

For each size, on held-out text of the target language:

* tokens added to the base (after removing what the base already has),
* RIC, the Ratio of Input Complexity: tokens with the merged tokenizer / tokens with the base,
* REC, the Ratio of Embedding Complexity: merged vocabulary size / base vocabulary size,
* characters per token, and the merged tokenizer's token count against the standalone tokenizer's.

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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redwhale.corpus.split import split_of
from redwhale.errors import DataError, TokenizerError
from redwhale.rundir import atomic_write_json, atomic_write_text
from redwhale.tokenizer.base import load_base
from redwhale.tokenizer.merge import NewTokenizer, build, plan
from redwhale.tokenizer.scripts import Script, get_script
from redwhale.tokenizer.train import TrainOn, train_new

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
    standalone_tokens: int
    merged_vs_standalone: float
    merged_vs_standalone_script_words: float


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
    from tokenizers import Tokenizer

    data = json.loads(json.dumps(new.data))
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


def sweep(
    base_spec: str,
    texts: Iterable[str],
    sizes: list[int],
    out: Path,
    script_name: str = "hangul",
    seed: int = 0,
    heldout_fraction: float = 0.05,
    heldout_max_chars: int = 2_000_000,
    train_on: TrainOn = "script_words",
    min_frequency: int = 2,
    cache_dir: str | Path | None = None,
    heldout_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Train once at the largest size, measure every size, choose the knee; write ``sweep.json``, ``sweep.md``,
    ``sweep.png`` and the standalone tokenizer (``new-tokenizer/``) into ``out``."""
    sizes = sorted(set(sizes))
    if not sizes:
        raise TokenizerError("no vocabulary sizes to sweep")
    script = get_script(script_name)
    base_hf, base = load_base(base_spec, cache_dir)
    started = time.perf_counter()
    splitter = HeldOut(texts, seed, heldout_fraction if heldout_texts is None else 0.0, script, heldout_max_chars)
    new = train_new(splitter, base, max(sizes), script, out / "new-tokenizer", train_on, min_frequency)
    heldout = heldout_texts if heldout_texts is not None else splitter.texts
    if not heldout:
        raise DataError(f"no held-out {script.name} text: the corpus is too small for a {heldout_fraction:.0%} split")
    trained = time.perf_counter()
    full_plan = plan(base, new, script)
    planned = time.perf_counter()
    base_backend = base_hf.backend_tokenizer
    words = _script_words(heldout, base_backend.pre_tokenizer, script)
    base_tokens = _count(base_backend, heldout)
    chars = sum(len(t) for t in heldout)
    rows = []
    for size in sizes:
        candidates = new.candidates_for_size(size)
        merged = build(base, full_plan, candidates)
        if not merged.added:
            raise TokenizerError(f"size {size} adds no token: it is not larger than what the base already has")
        backend = merged.backend()
        standalone = _standalone_prefix(new, size)
        merged_tokens = _count(backend, heldout)
        standalone_tokens = _count(standalone, heldout)
        rows.append(
            SweepRow(
                size=size,
                added_tokens=len(merged.added),
                merged_vocab=merged.size,
                rec=merged.size / merged.base_size,
                ric=merged_tokens / base_tokens,
                chars_per_token=chars / merged_tokens,
                merged_tokens=merged_tokens,
                standalone_tokens=standalone_tokens,
                merged_vs_standalone=merged_tokens / standalone_tokens,
                merged_vs_standalone_script_words=_count(backend, words) / max(_count(standalone, words), 1),
            )
        )
        log.info(
            "size %6d: +%d tokens, REC %.3f, RIC %.3f, %.2f chars/token",
            size,
            rows[-1].added_tokens,
            rows[-1].rec,
            rows[-1].ric,
            rows[-1].chars_per_token,
        )
    chosen = knee(rows)
    result = {
        "base": base_spec,
        "kind": base.kind,
        "script": script.name,
        "base_vocab": base.size,
        "heldout_documents": len(heldout),
        "heldout_characters": chars,
        "base_tokens": base_tokens,
        "base_chars_per_token": chars / base_tokens,
        "train_on": train_on,
        "rows": [asdict(r) for r in rows],
        "chosen_size": chosen,
        "knee_rule": "kneedle on (REC, RIC): farthest point below the chord from the smallest to the largest size",
        "candidate_counts": dict(full_plan.counts),
        "seconds": {
            "train": round(trained - started, 2),
            "plan": round(planned - trained, 2),
            "measure": round(time.perf_counter() - planned, 2),
        },
    }
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", sweep_markdown(result))
    plot_sweep(result, out / "sweep.png")
    return result


def sweep_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Vocabulary sweep ({result['script']}, base {result['base']})",
        "",
        f"Held-out: {result['heldout_documents']:,} documents, {result['heldout_characters']:,} characters; "
        f"base: {result['base_vocab']:,} tokens, {result['base_chars_per_token']:.3f} characters per token.",
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
