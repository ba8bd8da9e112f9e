"""Training benchmark on CPU: each stage of the schedule against a full fine-tune, same batch and sequence length.

    python bench/bench_train.py [--corpus ../shared/data/ko_corpus/ko_train.jsonl] [--steps 6]

SmolLM2-135M extended with a 20,000-token Korean tokenizer (trained on the corpus's training split; decomposition
init: the init does not change the cost). Each stage runs in a fresh process for a fixed number of steps; figures:
median tokens/s over the steps after the warm-up, its ratio to the full fine-tune's, peak memory during the steps (bytes
allocated, and the resident set; see stage_worker.py), and the memory plan's estimate for the same stage. Stages are
interleaved over rounds, and each figure is the median over rounds. Targets (issue: training engine): tokens/s stage 1
>= 1.3x, stages 2-3 >= 1.15x, stage 4 >= 1.25x the full fine-tune's; every stage's peak below the full fine-tune's;
the plan within 15% of each measured peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parents[1] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def prepare(work: Path, corpus: Path, base: str, size: int) -> tuple[Path, Path]:
    """Tokenizer (20k), merge, extended model and tokenised training data, cached in ``work``."""
    from redwhale.train.commands import prepare_data

    from redwhale.config.schema import CorpusInput, TokenizerSection
    from redwhale.core.text import training_texts
    from redwhale.corpus.readers import iter_texts
    from redwhale.models.extend import extend_command
    from redwhale.tokenizer.commands import train_command
    from redwhale.tokenizer.merge import merge_tokenizers

    model = work / "extended"
    if not (model / "config.json").is_file():
        texts = list(training_texts(iter_texts([CorpusInput(path=str(corpus))])))
        train_file = work / "train.txt"
        train_file.write_text("\n\n".join(t.replace("\n\n", "\n") for t in texts), encoding="utf-8")
        train_command(
            base, [CorpusInput(path=str(train_file), format="text")], TokenizerSection(size=size), work / "ko-tokenizer"
        )
        merge_tokenizers(base, work / "ko-tokenizer", work / "merged", pad_to_multiple_of=64)
        extend_command(base, work / "merged", "decomposition", model)
    data, _ = prepare_data(model, training_texts(iter_texts([CorpusInput(path=str(corpus))])), None, work / "data")
    return model, data


def run_stage(model: Path, data: Path, stage: dict, train: dict, steps: int, warmup: int, sample_ms: float) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "stage_worker.py"),
        "--model",
        str(model),
        "--data",
        str(data),
        "--stage-json",
        json.dumps(stage),
        "--train-json",
        json.dumps(train),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--sample-ms",
        str(sample_ms),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"stage {stage['name']} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/redwhale-bench-train"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="leading steps left out of the median")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every stage")
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    args = parser.parse_args()

    from redwhale.config.schema import TrainSection, default_stages
    from redwhale.core.logs import setup_logging
    from redwhale.train.plan import full_finetune_stage, plan

    setup_logging()
    args.work.mkdir(parents=True, exist_ok=True)
    model, data = prepare(args.work, args.corpus, args.base, 20000)
    train = {"sequence_length": args.sequence_length, "micro_batch_size": args.micro_batch_size, "grad_accum": 1}
    stages = default_stages()
    lora16 = stages[-1].model_copy(
        update={"name": "lora_r16", "lora": stages[-1].lora.model_copy(update={"rank": 16, "alpha": 32})}
    )
    stages = [*stages, lora16, full_finetune_stage(stages)]
    cfg = TrainSection(**train, stages=stages[:-1])
    estimate = {s["stage"]: s for s in plan(str(model), cfg, 1e6, new_tokens=0, on_gpu=False)["stages"]}
    # Speed: stages interleaved over rounds (A B C ... A B C ...) so that drifts of this shared machine's speed hit
    # every stage alike, each figure the median over rounds; no memory sampling (its thread contends for the GIL).
    # Memory: one more round with the sampler on.
    runs: dict[str, list[dict]] = {s.name: [] for s in stages}
    memory: dict[str, dict] = {}
    for round_index in range(args.rounds + 1):
        measuring_memory = round_index == args.rounds
        for stage in stages:
            result = run_stage(
                model,
                data,
                stage.model_dump(mode="json"),
                train,
                3 if measuring_memory else args.steps,
                1 if measuring_memory else args.warmup,
                5.0 if measuring_memory else 0.0,
            )
            if measuring_memory:
                memory[stage.name] = result
                print(
                    f"memory {result['stage']:>15}: allocated {result['peak_mb']:8.0f} MiB, "
                    f"RSS {result['peak_rss_steps_mb']:8.0f} MiB",
                    flush=True,
                )
                continue
            runs[stage.name].append(result)
            print(f"round {round_index + 1} {result['stage']:>15}: {result['tokens_per_s']:8.1f} tokens/s", flush=True)
    results = []
    for name, rs in runs.items():
        merged = dict(rs[0])
        merged["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in rs)
        merged["peak_mb"] = memory[name]["peak_mb"]
        merged["peak_rss_steps_mb"] = memory[name]["peak_rss_steps_mb"]
        merged["rounds"] = [round(r["tokens_per_s"], 1) for r in rs]
        results.append(merged)
    full = results[-1]
    targets = {"embeddings": 1.3, "odd_layers": 1.15, "even_layers": 1.15, "lora": 1.25, "lora_r16": 1.25}
    print(
        f"\nSmolLM2-135M + 20k Korean tokens, CPU fp32, {train['micro_batch_size']} x {train['sequence_length']} "
        f"tokens per step, median of steps {args.warmup + 1}..{args.steps}, median of {args.rounds} interleaved "
        "rounds"
    )
    print(
        "| stage | trainable | tokens/s | vs full | target | FLOP limit | peak allocated MiB | plan MiB | "
        "plan / allocated | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        est = estimate[r["stage"]]["total_gib"] * 1024
        limit = estimate["full fine-tune"]["flops_per_token"] / estimate[r["stage"]]["flops_per_token"]
        ratio = r["tokens_per_s"] / full["tokens_per_s"]
        target = f">= {targets[r['stage']]}x" if r["stage"] in targets else ""
        print(
            f"| {r['stage']} | {r['trainable_parameters'] / 1e6:.1f} M | {r['tokens_per_s']:.1f} | {ratio:.2f}x | "
            f"{target} | {limit:.2f}x | {r['peak_mb']:.0f} | {est:.0f} | {est / r['peak_mb']:.2f} | "
            f"{r['peak_rss_steps_mb']:.0f} |"
        )
    (args.work / "bench_train.json").write_text(json.dumps({"results": results, "plan": estimate}, indent=2))


if __name__ == "__main__":
    main()
