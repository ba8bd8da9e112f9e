"""How many positions the calibrated init needs: the fit of its three numbers against the positions it sees.

SmolLM2-135M grown to a Korean tokenizer (``--size`` tokens, trained on the training split of
``../shared/data/ko_corpus``), new rows by decomposition. The final hidden states and next tokens of ``--positions``
positions of training text are collected once; the offsets are fitted on the first 1,024 .. 16,384 of them and each
fit is scored on the last 8,192 (held out from every fit): mean next-token NLL in nats, with the decomposition-only
NLL for scale. Prints the table and the seconds one forward position costs (what ``extend.calibration_positions``
spends).

    python bench/bench_calibration.py [--size 2000] [--positions 24576]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers_bench import corpus_texts, extended_smollm2
from redwhale.core.bpb import document_windows
from redwhale.core.source import materialize, resolve
from redwhale.core.text import training_texts
from redwhale.models import init as calibration
from redwhale.models.extend import calibration_data, new_token_strings

HERE = Path(__file__).resolve().parent
HELD_OUT = 8192


def heldout_nll(hidden, targets, head, base_size: int, offsets: torch.Tensor) -> float:
    with torch.no_grad():
        logits = hidden.float() @ head.float().T
        logits[:, base_size:] += offsets
        return float(torch.nn.functional.cross_entropy(logits, targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="Korean tokenizer size")
    parser.add_argument("--positions", type=int, default=24_576, help="positions collected (the last 8,192 score)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/redwhale-bench-calibration"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model_dir, _ = extended_smollm2(args.work, size=args.size, init="decomposition")
    base_tokenizer = AutoTokenizer.from_pretrained(materialize(resolve("smollm2-135m"), None))
    merged = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base_size = len(base_tokenizer)
    sample, counts = calibration_data(merged, training_texts(corpus_texts()), args.positions * 4)
    windows, _, _ = document_windows(merged, sample, window=1024, stride=1024)
    started = time.perf_counter()
    with torch.no_grad():
        hidden, targets = calibration.collect_hidden(model, windows, args.positions)
    per_position = (time.perf_counter() - started) / len(targets)
    head = model.get_output_embeddings().weight.detach()
    pieces = calibration.decompose(base_tokenizer.backend_tokenizer, new_token_strings(merged, base_size))
    features = calibration.offset_features(counts[base_size : len(merged)], pieces)
    fit_h, fit_t = hidden[:-HELD_OUT], targets[:-HELD_OUT]
    test_h, test_t = hidden[-HELD_OUT:], targets[-HELD_OUT:]
    zero = heldout_nll(test_h, test_t, head, base_size, torch.zeros(features.shape[0]))
    rows = []
    n = 1024
    while n <= len(fit_t):
        theta, _, _ = calibration.fit_offsets(fit_h[:n], fit_t[:n], head, base_size, features)
        rows.append({"positions": n, "theta": [round(float(x), 3) for x in theta],
                     "heldout_nll": heldout_nll(test_h, test_t, head, base_size, features @ theta)})  # fmt: skip
        n *= 2
    best = rows[-1]["heldout_nll"]
    print(f"SmolLM2 + {len(merged) - base_size:,} Korean tokens; held-out NLL without calibration: {zero:.4f} nats")
    print("| fitted on positions | theta | held-out NLL (nats) | vs the largest fit | share of the gain lost |")
    print("|---|---|---|---|---|")
    for r in rows:
        lost = (r["heldout_nll"] - best) / (zero - best)
        print(f"| {r['positions']:,} | {r['theta']} | {r['heldout_nll']:.4f} | {r['heldout_nll'] - best:+.4f} "
              f"| {lost:.2%} |")  # fmt: skip
    print(f"forward cost: {per_position * 1e3:.2f} ms per position on this machine ({torch.get_num_threads()} threads)")
    out = HERE / "measured" / "calibration.json"
    payload = {"size": args.size, "uncalibrated_nll": zero, "rows": rows, "seconds_per_position": per_position}
    out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
