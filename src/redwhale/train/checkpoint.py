"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``<stage index>-<stage name>-step<step>`` (or ``...-done`` at the end of a stage) holding:

* ``model.safetensors``: every weight of the model (LoRA adapters included in a LoRA stage), shared tensors once;
* ``optimizer.pt``: the optimizer state (loaded with ``torch.load(weights_only=True)``); the learning rate is a
  function of the step (and, under ``train.seconds``, of the seconds in ``state.json``), so there is no scheduler
  state;
* ``rng.pt``: the CPU and CUDA generator states;
* ``state.json``: stage index and name, step, tokens consumed, the data stream position, the stage's batch layout
  and the seconds it has trained (``train.seconds``).

It is written to a temporary folder and renamed, so a kill at any moment leaves either the new checkpoint or none;
the newest complete one is picked on resume, and older ones beyond ``keep`` are deleted.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from redwhale.core.io import atomic_dir, atomic_write_json

PATTERN = re.compile(r"^(?P<stage>\d{2})-(?P<name>.+)-(?P<what>step(?P<step>\d{8})|done)$")


@dataclass
class TrainState:
    stage_index: int = 0
    stage_name: str = ""
    step: int = 0
    tokens: int = 0
    stage_done: bool = False
    data: dict[str, int] = field(default_factory=dict)
    total_tokens: int = 0
    micro_batch_size: int = 0
    grad_accum: int = 0
    seconds: float = 0.0  # the stage's wall clock since its first step (train.seconds caps it)

    @classmethod
    def read(cls, folder: Path) -> TrainState:
        return cls(**json.loads((folder / "state.json").read_text()))


def checkpoint_name(state: TrainState) -> str:
    what = "done" if state.stage_done else f"step{state.step:08d}"
    return f"{state.stage_index:02d}-{state.stage_name}-{what}"


def save(folder: Path, model, optimizer, state: TrainState, keep: int) -> Path:
    """Write a checkpoint of ``model`` (unwrapped), ``optimizer`` (None at a stage's end) and ``state``."""
    target = folder / checkpoint_name(state)
    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict()}, tmp / "optimizer.pt")
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        atomic_write_json(tmp / "state.json", asdict(state))
    _prune(folder, keep)
    return target


def _key(path: Path) -> tuple[int, int, int] | None:
    match = PATTERN.match(path.name)
    if match is None or not (path / "state.json").is_file():
        return None
    done = match["what"] == "done"
    return int(match["stage"]), 1 if done else 0, int(match["step"] or 0)


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None."""
    if not folder.is_dir():
        return None
    found = [(k, p) for p in folder.iterdir() if p.is_dir() and (k := _key(p)) is not None]
    return max(found)[1] if found else None


def _prune(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` step checkpoints and the newest stage-end checkpoint."""
    found = sorted((k, p) for p in folder.iterdir() if p.is_dir() and (k := _key(p)) is not None)
    steps = [p for k, p in found if k[1] == 0]
    done = [p for k, p in found if k[1] == 1]
    newest = found[-1][0] if found else None
    for path in steps[:-keep] + done[:-1]:
        shutil.rmtree(path, ignore_errors=True)
    # step checkpoints of stages that have ended are no longer needed
    if newest is not None:
        for k, p in found:
            if k[1] == 0 and k[0] < newest[0] and p.exists():
                shutil.rmtree(p, ignore_errors=True)


def load_weights(path: Path, model) -> None:
    load_model(model, str(path / "model.safetensors"))


def load_optimizer(path: Path, optimizer) -> None:
    saved = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(saved["optimizer"])


def restore_rng(path: Path) -> None:
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
