"""Initialisation benchmark: SmolLM2-135M extended with a 20k Korean tokenizer, step-0 bits per byte per method.

    python bench/bench_init.py [--corpus ../shared/data/ko_corpus/ko_train.jsonl] [--korean-chars 30000]

Trains a 20,000-token Korean tokenizer on the training split of the corpus, merges it into SmolLM2's, and runs
`compare-init`: each method's Korean bits per byte on held-out Korean (a fixed random sample of the held-out split)
and English bits per byte (paragraphs of the Python reference, shipped with CPython), beside the base model with its
own tokenizer. Targets (issue: model extension): best method Korean <= 0.95x base, English within +0.5%.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--korean-chars", type=int, default=30000)
    parser.add_argument("--english-chars", type=int, default=20000)
    parser.add_argument("--methods", default="random,mean,decomposition,weighted,calibrated")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from redwhale.config.schema import CorpusInput, TokenizerSection
    from redwhale.core.logs import setup_logging
    from redwhale.core.text import heldout_sample, training_texts
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.readers import iter_texts
    from redwhale.models.compare import compare_init
    from redwhale.tokenizer.commands import train_command
    from redwhale.tokenizer.merge import merge_tokenizers

    setup_logging()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-init-"))
    texts = list(iter_texts([CorpusInput(path=str(args.corpus))]))
    start = time.perf_counter()
    train_file = out / "train.txt"
    out.mkdir(parents=True, exist_ok=True)
    # the tokenizer never sees the held-out split
    train_file.write_text("\n\n".join(t.replace("\n\n", "\n") for t in training_texts(texts)), encoding="utf-8")
    train_command(
        args.base,
        [CorpusInput(path=str(train_file), format="text")],
        TokenizerSection(size=args.size),
        out / "ko-tokenizer",
    )
    merge_tokenizers(args.base, out / "ko-tokenizer", out / "merged", pad_to_multiple_of=64)
    tokenizer_s = time.perf_counter() - start
    korean = heldout_sample(texts, args.korean_chars)
    english = heldout_sample(python_docs_english(unit="paragraph"), args.english_chars, heldout_only=False)
    result = compare_init(
        args.base,
        out / "merged",
        args.methods.split(","),
        korean,
        english,
        out / "compare",
        training_texts(texts),
        30_000,
    )
    print((out / "compare" / "compare_init.md").read_text())
    rows = {k: v for k, v in result["rows"].items() if k != "base" and "korean_bpb" in v}
    best = min(rows, key=lambda k: rows[k]["korean_bpb"])
    b = rows[best]
    print(
        f"best: {best}: Korean {b['korean_vs_base']:.3f}x base (target <= 0.95), English "
        f"{(b['english_vs_base'] - 1) * 100:+.2f}% (target <= +0.5%)"
    )
    print(f"tokenizer {tokenizer_s:.0f} s, comparison {result['seconds']:.0f} s; outputs: {out}")


if __name__ == "__main__":
    main()
