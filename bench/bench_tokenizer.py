"""Tokenizer benchmark: the 9-size sweep and the 20k merge on the real Korean corpus, against a naive append.

    python bench/bench_tokenizer.py [--corpus ../shared/data/ko_corpus/ko_train.jsonl] [--base smollm2-135m]

Figures (issue: tokenizer): sweep wall time (8k..40k, one command, reading included); at 20,000 tokens: Korean
characters per token on held-out Korean (base for comparison), REC, English identical (share of English documents
whose token ids are unchanged; English = the Python reference's paragraphs, shipped with CPython), round trip, dead
tokens, and the merged tokenizer's Korean token count against the standalone Korean tokenizer's. The same figures for
a naive append of the 20k tokenizer's vocabulary and merges show what the merge plan buys.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def naive_append(base, new, size):
    """The naive merge: the 20k tokenizer's new tokens and all its merges appended as they are."""
    data = json.loads(json.dumps(base.data))
    vocab = data["model"]["vocab"]
    merges = new.candidates()[: new.candidates_for_size(size)]
    added = []
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = base.size + len(added)
            added.append(a + b)
    data["model"]["merges"] += [[a, b] for a, b in merges]
    return data, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs here (default: a temp folder)")
    args = parser.parse_args()

    from tokenizers import Tokenizer

    from redwhale.config.schema import CorpusInput, TokenizerSection
    from redwhale.core.logs import setup_logging
    from redwhale.core.scripts import get_script
    from redwhale.core.text import split_of
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.readers import iter_texts
    from redwhale.tokenizer.audit import audit, dead_tokens
    from redwhale.tokenizer.base import load_base
    from redwhale.tokenizer.commands import sweep_command
    from redwhale.tokenizer.merge import NewTokenizer, build, plan

    setup_logging()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    section = TokenizerSection()
    start = time.perf_counter()
    result = sweep_command(args.base, [CorpusInput(path=str(args.corpus))], section, out / "sweep")
    sweep_s = time.perf_counter() - start

    script = get_script(section.script)
    base_hf, base = load_base(args.base)
    new = NewTokenizer.load(out / "sweep" / "new-tokenizer")
    merged = build(base, plan(base, new, script), new.candidates_for_size(args.size), section.pad_to_multiple_of)
    english = python_docs_english(min_chars=80, unit="paragraph")
    heldout = [t for t in iter_texts([CorpusInput(path=str(args.corpus))]) if split_of(t) == "heldout"]
    checks = audit(base_hf, merged, script, texts={"korean": heldout, "english": english})
    row = next(r for r in result["rows"] if r["size"] == args.size)

    naive_data, naive_added = naive_append(base, new, args.size)
    naive = Tokenizer.from_str(json.dumps(naive_data))
    base_backend = base_hf.backend_tokenizer
    enc = lambda tok, texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]  # noqa: E731
    base_en = enc(base_backend, english)
    naive_changed = sum(a != b for a, b in zip(base_en, enc(naive, english), strict=True)) / len(english)
    merged_changed = sum(a != b for a, b in zip(base_en, enc(merged.backend(), english), strict=True)) / len(english)
    chars = sum(len(t) for t in heldout)
    naive_cpt = chars / sum(len(ids) for ids in enc(naive, heldout))

    class NaiveView:
        data, added, base_size, sp_proto = naive_data, naive_added, base.size, None

    naive_dead = len(dead_tokens(naive, NaiveView, script))

    print(
        f"corpus: {args.corpus} ({result['input']['documents']:,} documents, "
        f"{result['input']['malformed'] or 'no'} malformed lines); base: {args.base}"
    )
    print(
        f"held-out Korean: {result['heldout_documents']:,} documents, {result['heldout_characters']:,} characters; "
        f"English probe: {len(english):,} paragraphs of the Python reference"
    )
    print()
    print((out / "sweep" / "sweep.md").read_text())
    print(
        f"sweep of {len(result['rows'])} sizes, one command, reading included: {sweep_s:.1f} s "
        f"(train {result['seconds']['train']} s, plan {result['seconds']['plan']} s, "
        f"measure {result['seconds']['measure']} s)"
    )
    print()
    print(f"| at {args.size:,} | redwhale merge | naive append | target |")
    print("|---|---:|---:|---:|")
    print(
        f"| Korean chars/token (base {result['base_chars_per_token']:.3f}) | {row['chars_per_token']:.3f} | "
        f"{naive_cpt:.3f} | >= 2.5 |"
    )
    print(
        f"| REC | {merged.size / merged.base_size:.4f} | {(base.size + len(naive_added)) / base.size:.4f} | <= 1.40 |"
    )
    print(f"| English documents identical | {1 - merged_changed:.2%} | {1 - naive_changed:.2%} | 100% |")
    print(f"| round trip | {checks['round_trip']:.2%} of {checks['round_trip_texts']:,} texts | | 100% |")
    print(f"| dead tokens | {checks['dead_tokens']} | {naive_dead} | 0 |")
    print(f"| merged / standalone Korean tokens (whole text) | {row['merged_vs_standalone']:.3f} | | <= 1.02 |")
    print(
        f"| merged / standalone Korean tokens (Korean words) | {row['merged_vs_standalone_script_words']:.3f} | | "
        "<= 1.02 |"
    )
    print(f"| base ids unchanged | {checks['base_ids_unchanged']} | | yes |")
    print(f"\noutputs: {out}")


if __name__ == "__main__":
    main()
