"""What a bug report needs: package versions, devices and their bf16 support, memory, the GGUF cache, and whether
the Hub and local benchmark data are there (``redwhale doctor``; results files record the versions)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import psutil

from redwhale.core.source import default_cache_dir, hub_offline, hub_reachable

PACKAGES = (
    "redwhale",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "datatrove",
    "lm_eval",
    "safetensors",
    "gguf",
    "torchao",
    "torch-optimi",
    "bitsandbytes",
    "llama_cpp_python",
)


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def devices() -> dict[str, Any]:
    import torch  # several seconds; only when devices are asked about

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # without native bf16 (AVX512-BF16/AMX) a bf16 matmul on this CPU is two orders of magnitude slower than fp32
        "cpu_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cuda": torch.cuda.is_available(),
        "torch_cuda_build": torch.version.cuda,
        "gpus": [],
    }
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["gpus"].append(
            {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(),
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return info


def gguf_cache(cache_dir: Path | None = None) -> dict[str, Any]:
    folder = (cache_dir or default_cache_dir()) / "gguf"
    entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
    size = sum(f.stat().st_size for e in entries for f in e.rglob("*") if f.is_file())
    return {"path": str(folder), "entries": len(entries), "bytes": size}


def network() -> dict[str, Any]:
    return {"HF_HUB_OFFLINE": hub_offline(), "hub_reachable": hub_reachable()}


def disk(path: Path) -> dict[str, Any]:
    target = path if path.exists() else Path.cwd()
    usage = shutil.disk_usage(target)
    return {"path": str(target), "free_gib": round(usage.free / 2**30, 1), "writable": os.access(target, os.W_OK)}
