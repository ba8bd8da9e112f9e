"""Watching a long run: what the training bar costs per step, and how fast ``redwhale status`` answers on a big run.

1. The bar: the time one ``Progress.update`` takes with the figures the trainer passes (and the status file written
   every 2 s), against the time of one SmolLM2-135M training step on this CPU (sequence 256, micro-batch 4, the
   odd-layers stage, measured here): target < 1%. How often it redraws: tqdm's ``mininterval`` of 2 s, so at least
   every 2 s or every step, whichever is rarer.
2. ``redwhale status RUN_DIR`` (a fresh process, as a user runs it) on a run folder whose training has written
   1,000 checkpoints' worth of metrics (200,000 steps at checkpoint_every 200) and is interrupted mid-stage:
   target < 1 s.

    python bench/bench_watch.py [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from redwhale.core.progress import Progress

HERE = Path(__file__).resolve().parent


def update_cost(updates: int = 20_000) -> float:
    """Seconds per update of a bar (lines off a terminal, as in CI) that also writes the status file."""
    with tempfile.TemporaryDirectory() as folder:
        bar = Progress("stage 2/4 odd_layers", total=updates * 1024, unit="tok", file=Path(folder) / "p.json")
        started = time.perf_counter()
        for step in range(updates):
            bar.update(1024, log_now=False, step=step, loss=2.5, lr="1.00e-04", **{"tok/s": 50, "mem GiB": 1.7})
        elapsed = time.perf_counter() - started
        bar.close()
    return elapsed / updates


def step_seconds(steps: int) -> float:
    """Median seconds of a SmolLM2 odd-layers step here (bench_train's worker, after its first step)."""
    sys.path.insert(0, str(HERE))
    from bench_train import run
    from helpers_bench import extended_smollm2

    model, data = extended_smollm2(Path("/tmp/redwhale-bench-train"))
    spec = {"model": str(model), "data": str(data), "sequence_length": 256, "micro_batch_size": 4,
            "stage": "odd_layers", "steps": steps, "dtype": "float32", "train": {}}  # fmt: skip
    result = run(spec)
    return statistics.median(1024 / s for s in result["speeds"][1:])


def status_seconds(records: int = 200_000) -> float:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "big"
        logs = root / "train.partial" / "logs"
        logs.mkdir(parents=True)
        (root / "config.yaml").write_text(yaml.safe_dump({"name": "big", "train": {"tokens": 10**10}}))
        with open(logs / "metrics.jsonl", "w") as handle:
            for step in range(records):
                handle.write(json.dumps({"stage": "odd_layers", "stage_index": 1, "step": step, "global_step": step,
                                         "tokens": step * 2048, "loss": 2.0, "lr": 1e-4, "grad_norm": 1.0,
                                         "tokens_per_s": 5000.0, "memory_mb": 1.0, "seconds": 0.4,
                                         "time": 1.0e9 + step}) + "\n")  # fmt: skip
        for name in ("01-odd_layers-step00199800", "01-odd_layers-step00200000"):
            (root / "train.partial" / "checkpoints" / name).mkdir(parents=True)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "redwhale", "status", str(root)], capture_output=True, text=True
            )
            times.append(time.perf_counter() - started)
            assert out.returncode == 0 and "stage odd_layers step 199,999" in out.stdout, out.stdout + out.stderr
        return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    cost = update_cost()
    step = step_seconds(args.steps)
    print(f"bar update: {cost * 1e6:.1f} us; SmolLM2 odd-layers step on this CPU: {step:.2f} s; "
          f"cost {cost / step:.6%} of a step (target < 1%)")  # fmt: skip
    status = status_seconds()
    print(f"redwhale status on a run with 200,000 metric records: {status:.2f} s (best of 3; target < 1 s)")
    out = HERE / "measured" / "watch.json"
    out.write_text(json.dumps({"update_seconds": cost, "step_seconds": step, "status_seconds": status}, indent=2))


if __name__ == "__main__":
    main()
