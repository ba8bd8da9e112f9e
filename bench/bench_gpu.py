"""GPU benchmark: model FLOPs utilisation of every stage in bf16, and the memory plan against measured peaks.

    python bench/bench_gpu.py [--models smollm2-135m,llama-3.2-1b] [--steps 10] [--out DIR]

For each model (random weights: throughput does not depend on them; SmolLM2-135M and a ~1B Llama, each with 20,000
new tokens) and each stage of the default schedule plus a full fine-tune, one fresh process trains a fixed number of
steps on random tokens with the real trainer (bf16 autocast, fused AdamW). MFU = tokens/s x model FLOPs per token of
that stage (counted by the plan's probe, PaLM's convention) / the GPU's dense bf16 peak (H100 SXM: 989 TFLOP/s).
Memory: torch.cuda.max_memory_allocated against `redwhale train plan`'s estimate for the same stage.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench_train import run_stage  # bench/ is on sys.path when a bench script runs

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def make_model(preset: str, new_tokens: int, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from redwhale.train.plan import model_config

    if (out / "config.json").is_file():
        return out
    config = model_config(preset, new_tokens)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    return out


def make_data(vocab: int, tokens: int, out: Path) -> Path:
    import numpy as np

    if (out / "index.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, size=tokens, dtype=np.uint32).tofile(out / "shard-00000.bin")
    (out / "index.json").write_text(
        json.dumps(
            {
                "files": [{"name": "shard-00000.bin", "tokens": tokens}],
                "tokens": tokens,
                "documents": 1,
                "eos_id": 0,
                "vocab_size": vocab,
                "dtype": "uint32",
            }
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,llama-3.2-1b")
    parser.add_argument("--micro-batch", default="smollm2-135m=16,llama-3.2-1b=8")
    parser.add_argument("--sequence-length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--stages", default="embeddings,odd_layers,even_layers,lora,full fine-tune")
    parser.add_argument("--work", type=Path, default=Path("/tmp/redwhale-bench-gpu"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    args = parser.parse_args()

    import torch

    from redwhale.config.schema import TrainSection, default_stages
    from redwhale.train.plan import full_finetune_stage, plan

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    batches = dict(item.split("=") for item in args.micro_batch.split(","))
    wanted = args.stages.split(",")
    rows = []
    for preset in args.models.split(","):
        model = make_model(preset, 20000, args.work / preset)
        vocab = json.loads((model / "config.json").read_text())["vocab_size"]
        data = make_data(vocab, 4_000_000, args.work / f"{preset}-data")
        train = {
            "sequence_length": args.sequence_length,
            "micro_batch_size": int(batches[preset]),
            "grad_accum": 1,
            "compile": args.compile,
        }
        estimate = {s["stage"]: s for s in plan(preset, TrainSection(**train), 1e6)["stages"]}
        for stage in default_stages() + [full_finetune_stage(default_stages())]:
            if stage.name not in wanted:
                continue
            try:  # the stage worker samples memory only on CPU; on a GPU it reads torch.cuda's peak
                result = run_stage(model, data, stage.model_dump(mode="json"), train, args.steps, args.warmup, 5.0)
            except RuntimeError as exc:
                print(f"{preset} {exc}", flush=True)
                continue
            est = estimate[stage.name]
            flops = est["flops_per_token"]
            result.update(
                model=preset,
                flops_per_token=flops,
                plan_gib=est["total_gib"],
                achieved_tflops=result["tokens_per_s"] * flops / 1e12,
            )
            result["mfu"] = result["achieved_tflops"] / peak if peak else None
            rows.append(result)
            print(
                f"{preset:>14} {stage.name:>15}: {result['tokens_per_s']:>10,.0f} tok/s "
                f"{result['achieved_tflops']:6.1f} TFLOP/s MFU {result['mfu'] or 0:.1%} "
                f"peak {result['peak_mb'] / 1024:6.2f} GiB plan {est['total_gib']:6.2f} GiB",
                flush=True,
            )
    print(
        f"\n{name}, bf16 autocast, sequence {args.sequence_length}, compile {args.compile}, "
        f"peak {peak} TFLOP/s (dense bf16)"
    )
    print("| model | stage | micro-batch | tokens/s | TFLOP/s | MFU | peak GiB | plan GiB | plan / peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['stage']} | {batches[r['model']]} | {r['tokens_per_s']:,.0f} | "
            f"{r['achieved_tflops']:.1f} | {(r['mfu'] or 0):.1%} | {r['peak_mb'] / 1024:.2f} | {r['plan_gib']:.2f} | "
            f"{r['plan_gib'] * 1024 / r['peak_mb']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_gpu{'_compile' if args.compile else ''}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
