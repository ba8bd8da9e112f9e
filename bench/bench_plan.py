"""The memory plans of the shipped GPU configs: does every stage of the paper's run fit one 80 GB GPU (and 48 GB
with offload), and which stages of Llama-3.1-8B and Qwen2.5-7B fit 80 GB and 24 GB. Each plan is for the largest
vocabulary its config's ``tokenizer.size`` can choose (``auto``: up to 80,000 new tokens).

Plans are computed on PyTorch's meta device (no weights, no GPU needed; see ``redwhale train plan``). For the
offloading config it also prints the plan's expected throughput cost of the offload, from stated assumptions (PCIe
bandwidth, the GPU's bf16 throughput at a given MFU) and one measured figure: the speed of fused fp32 AdamW on this
machine's CPU (parameters per second), which bounds the host step from below for a host of this many cores.

    python bench/bench_plan.py [--json bench/measured/plans.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from redwhale.config import load_config
from redwhale.train.plan import plan, plan_markdown

REPO = Path(__file__).resolve().parents[1]
CASES = [
    ("solar-10.7b", "configs/gpu/solar-10.7b.yaml", "80GB"),
    ("solar-10.7b", "configs/gpu/solar-10.7b-48gb.yaml", "48GB"),
    ("llama-3.1-8b", "configs/gpu/llama-3.1-8b.yaml", "80GB"),
    ("llama-3.1-8b", "configs/gpu/llama-3.1-8b.yaml", "24GB"),
    ("qwen2.5-7b", "configs/gpu/qwen2.5-7b.yaml", "80GB"),
    ("qwen2.5-7b", "configs/gpu/qwen2.5-7b.yaml", "24GB"),
]
PCIE_BYTES_PER_S = 25e9  # PCIe 4.0 x16, one direction, effective
GPU_BF16_FLOPS = 989e12  # H100 SXM dense bf16
MFU = 0.40


def host_adamw_rate(params: int = 20_000_000, steps: int = 5) -> float:
    """Parameters per second of torch's fused fp32 AdamW step on this CPU (the host side of the offload)."""
    weight = torch.nn.Parameter(torch.randn(params))
    weight.grad = torch.randn(params)
    optimizer = torch.optim.AdamW([weight], lr=1e-4, fused=True)
    optimizer.step()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return params * steps / (time.perf_counter() - started)


def offload_cost(stage: dict, tokens_per_step: int, host_rate: float) -> dict:
    trained = stage["trainable_parameters"]
    transfer = trained * 8 / PCIE_BYTES_PER_S  # fp32 gradients to the host, fp32 weights back
    host = trained / host_rate
    compute = tokens_per_step * stage["flops_per_token"] / (GPU_BF16_FLOPS * MFU)
    return {
        "gpu_seconds_per_step": compute,
        "offload_seconds_per_step": transfer + host,
        "slowdown": (compute + transfer + host) / compute,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rate = host_adamw_rate()
    print(f"fused fp32 AdamW on this CPU ({torch.get_num_threads()} threads): {rate / 1e6:,.0f} M parameters/s\n")
    results = []
    for preset, config, memory in CASES:
        cfg = load_config(REPO / config)
        gib = float(memory.removesuffix("GB")) * 1e9 / 2**30
        new_tokens = cfg.tokenizer.largest_size()
        result = plan(preset, cfg.train, gib, new_tokens, on_gpu=True, model_dtype=cfg.model.dtype)
        result["config"] = config
        print(f"{config}: {new_tokens:,} new tokens, the most tokenizer.size {cfg.tokenizer.size!r} can merge")
        print(plan_markdown(result))
        fits = [s["stage"] for s in result["stages"] if s["fits"] and s["stage"] != "full fine-tune"]
        headroom = {s["stage"]: round(1 - s["total_gib"] / gib, 3) for s in result["stages"]}
        print(f"{config} on {memory}: stages that fit: {', '.join(fits) or 'none'}; headroom {headroom}")
        if cfg.train.offload_optimizer:
            for s in result["stages"][:-1]:
                tokens = s["micro_batch_size"] * s["grad_accum"] * cfg.train.sequence_length
                s["offload"] = offload_cost(s, tokens, rate)
                o = s["offload"]
                print(
                    f"  {s['stage']}: offload adds {o['offload_seconds_per_step']:.1f} s to a "
                    f"{o['gpu_seconds_per_step']:.2f} s step ({tokens:,} tokens): {o['slowdown']:.1f}x slower"
                )
        print()
        results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"host_adamw_params_per_s": rate, "plans": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
