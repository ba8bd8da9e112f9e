"""Runs one training stage for a fixed number of steps in this process and prints its measurements as JSON.

Used by bench_train.py (CPU) and bench_gpu.py (GPU), one fresh process per stage so that the peak memory of a stage
is its own. On CUDA: torch.cuda.max_memory_allocated during the steps (before adapters are merged and the model is
saved). On CPU, sampled every 2 ms during the steps, minus the value after imports: the bytes allocated through malloc
(the counterpart of CUDA's allocated memory, compared with the plan) and the resident set (what the OS sees, which
also holds memory the allocator keeps after frees).

    python bench/stage_worker.py --model DIR --data DIR --stage-json '{...}' --train-json '{...}' --steps N
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _allocated_reader():
    """Bytes currently allocated through malloc (glibc's mallinfo2: in-use heap chunks + mmapped chunks): the CPU
    counterpart of torch.cuda.memory_allocated, without the freed memory the allocator keeps in the resident set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def read() -> float:
        info = libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    return read


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--stage-json", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help="leading steps left out of the median")
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=5.0,
        help="memory sampling period on CPU (0 = off: a sampling thread slows Python-heavy stages)",
    )
    args = parser.parse_args()

    import psutil
    import torch

    from redwhale.config.schema import StageSection, TrainSection
    from redwhale.train.loop import Trainer

    process = psutil.Process(os.getpid())
    allocated = _allocated_reader()
    baseline_mb = process.memory_info().rss / 2**20
    baseline_allocated = allocated() if allocated else 0.0
    samples: list[tuple[float, float, float]] = []
    running = threading.Event()
    running.set()

    def sample() -> None:  # memory every few ms, to find the peak inside the training steps
        while running.is_set():
            samples.append((time.time(), process.memory_info().rss / 2**20, allocated() if allocated else 0.0))
            time.sleep(args.sample_ms / 1000)

    if args.sample_ms > 0 and not torch.cuda.is_available():
        threading.Thread(target=sample, daemon=True).start()
    train = json.loads(args.train_json)
    stage = StageSection.model_validate(json.loads(args.stage_json))
    per_step = train["sequence_length"] * train["micro_batch_size"] * train.get("grad_accum", 1)
    stage = stage.model_copy(update={"tokens": per_step * args.steps, "warmup_fraction": 0.0})
    cfg = TrainSection.model_validate(
        {**train, "stages": [stage.model_dump()], "checkpoint_every": 10**6, "tensorboard": False}
    )
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(args.model, args.data, None, cfg, Path(work))
        if not torch.cuda.is_available():
            # transformers maps safetensors files into memory: copy the weights into ordinary allocations so that
            # the allocator's count includes them (the plan counts them)
            with torch.no_grad():
                for param in trainer.model.parameters():
                    param.data = param.data.clone()
        trainer.run()
        running.clear()
        records = [json.loads(line) for line in (Path(work) / "logs" / "metrics.jsonl").read_text().splitlines()]
    window_start = records[0]["time"] - records[0]["seconds"]
    window_end = records[-1]["time"]
    in_steps = [(rss, alloc) for t, rss, alloc in samples if window_start <= t <= window_end] or [(0.0, 0.0)]
    step_peak_rss = max(rss for rss, _ in in_steps)
    step_peak_allocated = max(alloc for _, alloc in in_steps) - baseline_allocated
    timed = records[args.warmup :] or records
    speeds = [r["tokens_per_s"] for r in timed]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, saving included
    result = {
        "stage": stage.name,
        "tokens_per_s": statistics.median(speeds),
        "step_seconds": statistics.median(r["seconds"] for r in timed),
        "trainable_parameters": trainer.summaries[0]["trainable_parameters"],
        "final_loss": records[-1]["loss"],
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": peak_rss_mb,
        "peak_mb": trainer.summaries[0]["peak_memory_mb"] if torch.cuda.is_available() else step_peak_allocated,
        "peak_rss_steps_mb": step_peak_rss - baseline_mb,
        "memory_measure": "cuda max_memory_allocated during the steps"
        if torch.cuda.is_available()
        else "peak malloc-allocated bytes during the steps (mallinfo2, sampled every 2 ms) - after imports",
    }
    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
