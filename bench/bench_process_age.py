"""Does one process train slower the longer it lives, on which allocator, and what do bf16 products buy on CPU? The
same short stage (the default even-layers stage, ``--steps`` steps of 2 x 512 tokens on the Korean training corpus),
trained ``--rounds`` times in one process: tokens/s of each round (the first step of each left out), its mean loss
(the same steps on the same data each round: what ``--precision`` changes) and the process's resident memory.

bench_cpt.py trains its arms one after the other in one process; if the rate falls round after round, its later
arms train fewer tokens than a fresh process would. The allocator is the caller's (``LD_PRELOAD``); the script
prints which one runs.

    python bench/bench_process_age.py MODEL_DIR [--rounds 3] [--precision fp32]     # glibc's malloc
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python bench/bench_process_age.py MODEL_DIR

``--record FILE`` appends one JSON line per run (the rounds, the allocator, the precision and which bf16 instructions
the CPU has), as ``bench/measured/cpu_precision.jsonl`` keeps r38's fp32 against bf16 on a CPU with AVX512-BF16 and
no AMX.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from redwhale.config.schema import TrainSection, default_stages
from redwhale.core.environment import cpu_native_bf16, malloc_loaded
from redwhale.train.run import train_schedule

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="train.precision")
    parser.add_argument("--record", type=Path, help="append one JSON line with the rounds to this file")
    args = parser.parse_args()
    with CORPUS.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(3000), handle, strict=False)]
    stage = default_stages()[2].model_dump(exclude={"share"})
    print(f"allocator {malloc_loaded()}, precision {args.precision} (CPU bf16 in hardware: {cpu_native_bf16()})")
    rounds = []
    for index in range(args.rounds):
        section = TrainSection(tokens=None, sequence_length=512, micro_batch_size=2, checkpoint_every=10**6,
                               tensorboard=False, precision=args.precision,
                               stages=[dict(stage, tokens=args.steps * 1024)])  # fmt: skip
        work = Path(tempfile.mkdtemp(prefix="redwhale-age-"))
        train_schedule(args.model, texts, None, section, work)
        rows = [json.loads(x) for x in (work / "logs" / "metrics.jsonl").read_text().splitlines()]
        seconds = [r["seconds"] for r in rows[1:]]
        rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
        rounds.append({"tokens_per_s": round(1024 * len(seconds) / sum(seconds), 1), "resident_mb": rss,
                       "mean_loss": round(statistics.fmean(r["loss"] for r in rows), 5)})  # fmt: skip
        print(f"round {index}: {rounds[-1]['tokens_per_s']:.1f} tokens/s, mean loss {rounds[-1]['mean_loss']:.4f}, "
              f"resident {rss:,} MB", flush=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    if args.record:
        import torch

        cpu = {
            name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
            for name in ("amx_tile", "avx512_bf16")
        }
        record = {"model": str(args.model), "precision": args.precision, "bf16_products": cpu_native_bf16(),
                  "allocator": malloc_loaded(), "cpu": cpu, "cpus": os.cpu_count(), "steps": args.steps,
                  "stage": stage["name"], "rounds": rounds}  # fmt: skip
        with args.record.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
