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
        "cpu_bf16_products": cpu_native_bf16(),  # what train.precision: auto uses on CPU
        "malloc": malloc_loaded(),
        "fast_malloc_found": fast_malloc() or "none",
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


# Where Debian/Ubuntu (libtcmalloc-minimal4, libjemalloc2), Fedora and conda put the allocators PyTorch's CPU tuning
# guide recommends (``torch.backends.xeon.run_cpu`` looks only for an unversioned ``libtcmalloc.so``).
_MALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc.so", "libjemalloc.so.2", "libjemalloc.so")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def malloc_loaded() -> str:
    """The allocator this process runs on: ``tcmalloc``, ``jemalloc`` or ``system`` (glibc's, or unknown off Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "system")


def fast_malloc() -> str | None:
    """A tcmalloc or jemalloc library on this machine (to ``LD_PRELOAD``), tcmalloc first; None if neither."""
    prefixes = [os.environ[v] + "/lib" for v in ("CONDA_PREFIX", "VIRTUAL_ENV") if os.environ.get(v)]
    for name in _MALLOC_NAMES:
        for folder in (*prefixes, *_LIB_DIRS):
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def malloc_advice() -> str | None:
    """What to tell a user who trains on CPU with the system allocator (None when there is nothing to say).

    Measured (``bench/bench_process_age.py``, SmolLM2-135M, 2 cores): glibc's malloc trains 292 tokens/s in a fresh
    process and 8% slower each time the process trains again (267 by the third run); tcmalloc 377-386 tokens/s,
    not slowing down; jemalloc 322-356."""
    if sys.platform != "linux" or malloc_loaded() != "system":
        return None
    found = fast_malloc()
    how = f"LD_PRELOAD={found}" if found else "install tcmalloc (Debian/Ubuntu: apt install libtcmalloc-minimal4)"
    return (f"training on CPU with the system allocator; tcmalloc trained SmolLM2 1.3x faster and does not slow "
            f"down as the process ages (bench/bench_process_age.py): {how}")  # fmt: skip


def rerun_with_fast_malloc() -> str:
    """Replace this process by itself under tcmalloc or jemalloc (``LD_PRELOAD``) when the machine has one and the
    process runs on the system allocator; returns the allocator it runs on. Benchmarks call it first thing, so that
    their figures do not depend on glibc's slowdown (:func:`malloc_advice`). Tried once (an environment variable
    marks the attempt)."""
    loaded = malloc_loaded()
    found = fast_malloc()
    if loaded != "system" or found is None or os.environ.get("REDWHALE_MALLOC_TRIED") or sys.platform != "linux":
        return loaded
    preload = ":".join(p for p in (found, os.environ.get("LD_PRELOAD", "")) if p)
    env = dict(os.environ, LD_PRELOAD=preload, REDWHALE_MALLOC_TRIED="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    return loaded  # not reached


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel AMX, or AVX512-BF16 (Intel Cooper Lake and
    later, AMD Zen 4 and later). There bf16 autocast trains faster than float32: 1.9x with AMX (SmolLM2-135M, 2 cores,
    losses within 0.005 of float32's over 16 steps), 1.7x with AVX512-BF16 alone (an AMD EPYC, 2 cores, the even-layers
    stage: 307 and 322 against 184 and 192 tokens/s, mean loss 1.6973 against 1.6975; 1.9x on the 80k extension;
    ``bench/measured/cpu_precision.jsonl``, r38). Elsewhere it answers False: on AVX-512 without bf16 instructions
    bf16 products were two orders of magnitude slower than float32."""
    import torch

    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # private, present in torch >= 2.3
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:
            continue
    return False


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
