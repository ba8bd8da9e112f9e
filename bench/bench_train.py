"""Training on CPU: memory per stage and dtype option (measured against the plan), and each stage's speed against a
full fine-tune.

SmolLM2-135M extended with a 20,000-token Korean tokenizer (trained on the corpus's training split; decomposition
init), sequence 256, micro-batch 4. Every run is a fresh process (``--worker``) so that its peak is its own; the
Trainer measures the peak of memory allocated during each stage (glibc's mallinfo2, sampled every 20 ms, minus what
the process held before the model; see redwhale.core.memory) and plans the same stage (redwhale.train.plan).

    python bench/bench_train.py memory [--steps 64]    # odd layers: fp32 vs bf16 frozen weights (peak, loss)
    python bench/bench_train.py plan   [--steps 2]     # every stage x every dtype option: plan vs measured
                                 [--stages embeddings] # only these stages (the other rows in --out are kept)
    python bench/bench_train.py speed  [--steps 8]     # tokens/s of each stage and of a full fine-tune

Targets (issue: the paper's run fits the paper's GPU): odd-layers peak with bf16 frozen weights <= 0.7x the fp32
figure, its loss over 64 steps within 2% of fp32's; plan within 15% of measured for every stage and option.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parents[1] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
STAGES = {
    "embeddings": {"trainable": {"embeddings": "all", "lm_head": "all"}, "lr": 1e-3},
    "odd_layers": {"trainable": {"layers": "odd"}, "lr": 1e-4},
    "even_layers": {"trainable": {"layers": "even"}, "lr": 1e-4},
    "lora": {"lora": {"rank": 64, "alpha": 128}, "lr": 2e-4},
    "full": {"trainable": {"embeddings": "all", "lm_head": "all", "layers": "all", "norms": True}, "lr": 1e-4},
}
OPTIONS = {
    "fp32": {"dtype": "float32", "train": {}},
    "bf16 frozen": {"dtype": "bfloat16", "train": {}},
    "bf16 frozen + bf16 Kahan": {"dtype": "bfloat16", "train": {"trainable_dtype": "bfloat16"}},
}


def prepare(work: Path, corpus: Path, base: str, size: int) -> tuple[Path, Path]:
    """Tokenizer, merge, extended model and tokenised training data, cached in ``work``."""
    from helpers_bench import extended_smollm2

    return extended_smollm2(work, corpus, base, size)


def worker(spec: dict) -> dict:
    """One stage in this process: the Trainer's own summary and the losses of every step."""
    from redwhale.config.schema import TrainSection
    from redwhale.train.loop import Trainer

    per_step = spec["sequence_length"] * spec["micro_batch_size"]
    stage = {"name": spec["stage"], **STAGES[spec["stage"]], "tokens": per_step * spec["steps"], "warmup_fraction": 0}
    cfg = TrainSection(
        tokens=None,
        stages=[stage],
        sequence_length=spec["sequence_length"],
        micro_batch_size=spec["micro_batch_size"],
        checkpoint_every=10**6,
        tensorboard=False,
        **spec["train"],
    )
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(Path(spec["model"]), Path(spec["data"]), None, cfg, Path(work), dtype=spec["dtype"])
        summary = trainer.run()["stages"][0]
        lines = (Path(work) / "logs" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {**summary, "losses": [r["loss"] for r in records], "speeds": [r["tokens_per_s"] for r in records]}


def run(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, cwd=HERE
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{spec['stage']} / {spec['dtype']} failed:\n{out.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def memory(base: dict, steps: int, kept: dict | None = None, save=lambda rows: None) -> dict:
    """fp32 and bf16 frozen weights on the odd-layers stage; ``kept`` holds runs already measured (``--reuse``);
    ``save(rows)`` after each run (a 64-step run takes ~20 minutes)."""
    rows = {}
    for name in ("fp32", "bf16 frozen"):  # the Kahan option's memory is in `plan` (64 steps each cost ~17 min)
        option = OPTIONS[name]
        if kept and name in kept and kept[name].get("steps") == steps:
            rows[name] = kept[name]
        else:
            rows[name] = run({**base, "stage": "odd_layers", "steps": steps, **option})
            save(rows)
        r = rows[name]
        print(f"{name:>26}: peak {r['peak_memory_mb']:7.0f} MiB (plan {r['plan_gib'] * 1024:7.0f}), "
              f"mean loss {statistics.mean(r['losses']):.4f}, last-10 {r['final_loss']:.4f}", flush=True)  # fmt: skip
    fp32 = rows["fp32"]
    print(
        "\n| odd-layers stage | peak allocated MiB | vs fp32 | plan MiB | plan / measured | mean loss (64 steps) | vs fp32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        mean = statistics.mean(r["losses"])
        print(f"| {name} | {r['peak_memory_mb']:.0f} | {r['peak_memory_mb'] / fp32['peak_memory_mb']:.2f}x | "
              f"{r['plan_gib'] * 1024:.0f} | {r['plan_gib'] * 1024 / r['peak_memory_mb']:.2f} | {mean:.4f} | "
              f"{mean / statistics.mean(fp32['losses']) - 1:+.2%} |")  # fmt: skip
    return rows


def plan_vs_measured(base: dict, steps: int, stages: list[str] | None = None) -> dict:
    """Every stage (or ``stages``) x every option; rows already in ``--out`` for other stages are kept."""
    rows = {}
    print("| stage | option | peak allocated MiB | plan MiB | plan / measured |")
    print("|---|---|---:|---:|---:|")
    for stage in stages or STAGES:
        for name, option in OPTIONS.items():
            r = run({**base, "stage": stage, "steps": steps, **option})
            rows[f"{stage} / {name}"] = r
            print(f"| {stage} | {name} | {r['peak_memory_mb']:.0f} | {r['plan_gib'] * 1024:.0f} | "
                  f"{r['plan_gib'] * 1024 / r['peak_memory_mb']:.2f} |", flush=True)  # fmt: skip
    return rows


def speed(base: dict, steps: int) -> dict:
    rows = {}
    for stage in STAGES:
        rows[stage] = run({**base, "stage": stage, "steps": steps, **OPTIONS["fp32"]})
    full = statistics.median(rows["full"]["speeds"][2:])
    print("| stage | tokens/s (median of steps 3..) | vs full fine-tune |")
    print("|---|---:|---:|")
    for stage, r in rows.items():
        tps = statistics.median(r["speeds"][2:])
        print(f"| {stage} | {tps:,.0f} | {tps / full:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["memory", "plan", "speed"], default="memory")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/redwhale-bench-train"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=HERE / "measured" / "cpu_train.json")
    parser.add_argument("--reuse", nargs="*", default=[], help="memory: options whose runs in --out are kept")
    parser.add_argument("--stages", nargs="*", default=None, choices=list(STAGES), help="plan: only these stages")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model, data = prepare(args.work, args.corpus, args.base, 20000)
    base = {"model": str(model), "data": str(data), "sequence_length": args.sequence_length,
            "micro_batch_size": args.micro_batch_size}  # fmt: skip
    steps = args.steps or {"memory": 64, "plan": 2, "speed": 8}[args.what]
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}

    def save(rows: dict) -> None:
        saved[args.what] = {
            **saved.get(args.what, {}),
            **{k: {x: y for x, y in v.items() if x != "speeds"} for k, v in rows.items()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(saved, indent=2))

    if args.what == "memory":
        kept = {k: saved["memory"][k] for k in args.reuse if k in saved.get("memory", {})}
        rows = memory(base, steps, kept, save)
    else:
        rows = plan_vs_measured(base, steps, args.stages) if args.what == "plan" else speed(base, steps)
    save(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
