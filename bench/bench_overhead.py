"""What the recipe's overhead costs: the tokenizer and extend phases of bench_cpt.py's arm (a), and the English
reference ``merge_with_base: auto`` measures before training, timed.

Issue 13 counts these phases against the training budget ("overhead in proportion"). This runs them as bench_cpt.py's
(a) does (``tokenizer.size: auto`` planned for ``--planned`` training tokens, the sweep, the merge and its audit, the
extension with its calibration) ``--rounds`` times on the prepared corpus of a bench_cpt.py ``--out`` folder, and prints
each round's seconds with the sweep's own split (train / plan / measure). To compare two versions of the code, run it
with each in turn (``PYTHONPATH=<checkout>/src``), alternating, nothing else running::

    python bench/bench_overhead.py --out B --rounds 2
    python bench/bench_overhead.py --out B --rounds 2 --reference M   # M: an extended model, B/budget-960/a/extend/model

``--reference``: the start's and the base model's English bits per byte on auto's check text (the trainer's window
and products), measured as two passes (before r40) and as one (``bits_per_byte_each``), alternating.

r40 (2-core AMD EPYC, tcmalloc, B = bench r39's ``--out``, the two versions alternating, ``PYTHONPATH``): 66.6 and 63.7
s before the merge reused the sweep's plan, the sweep's prefixes stopped copying the tokenizer through JSON and the
audit encoded the script once (the sweep measuring its 14 sizes in 19.5 and 19.2 s); 55.4 and 55.8 s after (15.4 and
15.1 s). The reference on bench r40's 960 s (a) extended model: two passes 9.5 and 8.3 s, one pass 4.8 and 4.7 s, the
same figures (1.1770 and 1.1732).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import bench_cpt  # the script's folder is on the path
from redwhale.config.schema import EvalSection, TokenizerSection, TrainSection
from redwhale.core.environment import cpu_native_bf16, rerun_with_fast_malloc
from redwhale.core.logs import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a bench_cpt.py --out folder (its prepared corpus)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--planned", type=int, default=109_568, help="training tokens auto plans the vocabulary for")
    parser.add_argument("--reference", type=Path, help="an extended model: time auto's English reference instead")
    args = parser.parse_args()
    rerun_with_fast_malloc()
    setup_logging()
    if args.reference:
        return reference(args.reference, args.rounds)
    prepared = bench_cpt.prepared_corpus(args.out)
    for round_ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
        try:
            _, adapted, seconds = bench_cpt.adapt("a", TokenizerSection(), args.planned, prepared, work)
            sweep = json.loads((work / "tokenizer" / "sweep" / "sweep.json").read_text())["seconds"]
            print(f"round {round_ + 1}: {seconds:.1f} s (sweep {sweep}), size {adapted.chosen_size:,}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def reference(model_dir: Path, rounds: int) -> None:
    import torch

    from redwhale.core.bpb import bits_per_byte, bits_per_byte_each
    from redwhale.core.source import load_model, load_tokenizer
    from redwhale.core.text import heldout_after
    from redwhale.corpus.bundled import python_docs_english

    base_rows = json.loads((model_dir / "init_report.json").read_text())["base_vocab"]
    check = heldout_after(python_docs_english(unit="paragraph"), EvalSection().english_chars,
                          TrainSection().english_check_chars, 0, heldout_only=False)  # fmt: skip
    model, tokenizer = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    window = min(1024, bench_cpt.SEQ)
    for round_ in range(rounds):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_native_bf16()):  # as the trainer's products
            started = time.perf_counter()
            two = [bits_per_byte(model, tokenizer, check, window, window // 2, vocab=v).bits_per_byte
                   for v in (None, base_rows)]  # fmt: skip
            middle = time.perf_counter()
            each = bits_per_byte_each(model, tokenizer, check, window, window // 2, vocabs=(None, base_rows))
            one = [r.bits_per_byte for r in each]
            ended = time.perf_counter()
        print(f"round {round_ + 1}: two passes {middle - started:.1f} s {two}, one pass {ended - middle:.1f} s {one}")


if __name__ == "__main__":
    main()
