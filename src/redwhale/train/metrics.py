"""Per-step training metrics: a JSONL log (always), TensorBoard events and Weights & Biases (when asked).

The JSONL file is appended to and flushed at every line, so it survives a kill; after a resume, steps between the
last checkpoint and the kill appear twice, and readers keep the last record of each (stage, step).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import psutil
import torch

from redwhale.core.errors import missing_extra

log = logging.getLogger(__name__)


def memory_mb(device: torch.device) -> float:
    """Memory in use now: allocated CUDA memory on a GPU, the resident set of this process on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since the last reset (MiB); None on CPU (see the step samples instead)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


class MetricsLogger:
    """Writes one record per logged step to ``metrics.jsonl`` and, optionally, TensorBoard and W&B."""

    def __init__(
        self,
        folder: Path,
        enabled: bool = True,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        run_name: str = "redwhale",
        config: dict | None = None,
    ):
        self.enabled = enabled
        self.folder = folder
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(folder / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (kept open, closed below)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; skipping TensorBoard events")
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise missing_extra("wandb", "wandb") from None
            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config or {}, resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        step = int(record["global_step"])
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("global_step", "step"):
                    self._tb.add_scalar(f"{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file, keeping the last record of each (stage, step)."""
    if not path.is_file():
        return []
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        records[(record["stage_index"], record["step"])] = record
    return [records[k] for k in sorted(records)]
