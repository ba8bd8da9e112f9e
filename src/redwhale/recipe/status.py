"""``redwhale status RUN_DIR``: where a run stands, read from its folder alone, while it runs or after it was killed.

Per phase: done (and whether the run's config still gives the same hash), running (a live process updates its
progress file), interrupted (a ``.partial`` folder nobody works in) or not started; for the train phase also the
stage, step, tokens, last loss and the time left, from the tail of its metrics file and its checkpoints. Nothing here
imports torch, and the metrics file is read from its end, so the answer takes well under a second however long the
run has been going.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redwhale.config import load_config
from redwhale.core.progress import format_seconds
from redwhale.recipe.inputs import CACHE_FILE, Digests
from redwhale.recipe.phases import progress_of
from redwhale.recipe.plan import declared_phases, derived_values, phase_hashes
from redwhale.recipe.rundir import RunDir

LIVE_S = 120.0  # a progress file updated this recently by a living process means the phase is running


@dataclass
class PhaseStatus:
    name: str
    state: str  # done | running | interrupted | not started
    hash_matches: bool | None = None
    seconds: float | None = None
    progress: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def last_records(path: Path, count: int = 50, chunk: int = 1 << 16) -> list[dict[str, Any]]:
    """The last ``count`` complete JSON lines of a file, read from its end (a cut last line is skipped)."""
    if not path.is_file():
        return []
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        data = b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(chunk, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    out = []
    for line in data.splitlines()[-count - 1 :]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out[-count:]


def _checkpoints(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    )


def train_detail(folder: Path, cfg) -> dict[str, Any]:
    """Stage, step, tokens, last loss and time left of a train phase folder (running, interrupted or done)."""
    records = last_records(folder / "logs" / "metrics.jsonl")
    detail: dict[str, Any] = {"checkpoints": _checkpoints(folder / "checkpoints")}
    if not records:
        return detail
    last = records[-1]
    budget = sum(cfg.train.stage_tokens()) if cfg is not None else None
    rates = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
    rate = sum(rates) / len(rates) if rates else None
    eta = (budget - last["tokens"]) / rate if budget and rate else None
    if eta is not None and cfg.train.seconds is not None:  # the cap may end it first: its seconds left, at that speed
        eta = min(eta, max(cfg.train.seconds - last["tokens"] / rate, 0.0))
    detail.update(
        stage=last["stage"],
        stage_index=last["stage_index"],
        step=last["step"],
        tokens=last["tokens"],
        loss=last["loss"],
        tokens_per_s=rate,
        budget_tokens=budget,
        eta_s=eta,
        last_update_s=time.time() - last.get("time", time.time()),
    )
    return detail


def run_status(run_root: Path, config: Path | None = None) -> list[PhaseStatus]:
    """The status of every phase of the run in ``run_root`` (its config: ``config``, else the one the run wrote)."""
    run_dir = RunDir(run_root)
    path = config or run_root / "config.yaml"
    cfg = load_config(path) if path.is_file() else None
    phases = declared_phases()
    hashes: dict[str, str] = {}
    if cfg is not None:
        derived = derived_values(cfg, phases, probe=False)
        for phase in phases:  # values that ask the network: the ones the finished phase recorded
            marker = run_dir.marker(phase.name)
            if marker is not None:
                for key, value in (marker.summary.get("derived") or {}).items():
                    derived.setdefault(key, value)
        digests = Digests(run_root / CACHE_FILE)
        hashes = phase_hashes(cfg, phases, derived, digests)
        with contextlib.suppress(OSError):  # a read-only run directory: status still answers
            digests.save()  # the next status (or run) digests a changed input once, not every time
    out = []
    for phase in phases:
        out.append(_phase_status(run_dir, phase.name, hashes.get(phase.name), cfg))
    return out


def _phase_status(run_dir: RunDir, name: str, expected: str | None, cfg) -> PhaseStatus:
    marker = run_dir.marker(name)
    partial = run_dir.root / f"{name}.partial"
    progress = progress_of(partial) if partial.is_dir() else None
    if partial.is_dir():
        fresh = progress is not None and time.time() - progress.get("updated", 0) < LIVE_S
        state = "running" if fresh and _alive(progress.get("pid")) else "interrupted"
        status = PhaseStatus(name, state, progress=progress)
        if name == "train":
            status.detail = train_detail(partial, cfg)
        return status
    if marker is not None:
        matches = None if expected is None else marker.config_hash == expected
        status = PhaseStatus(name, "done", matches, marker.summary.get("seconds"))
        if name == "train":
            status.detail = train_detail(run_dir.path(name), cfg)
        return status
    return PhaseStatus(name, "not started")


def format_status(statuses: list[PhaseStatus]) -> str:
    """One line per phase, and the train phase's figures."""
    lines = []
    for s in statuses:
        text = s.state
        if s.state == "done":
            match = {True: "config matches", False: "STALE: the config changed", None: "no config to compare"}
            text += f" in {s.seconds:.0f} s ({match[s.hash_matches]})" if s.seconds is not None else ""
        if s.progress and s.state != "done":
            p = s.progress
            total = f"/{p['total']:,.0f}" if p.get("total") else ""
            text += f": {p['what']} {p['done']:,.0f}{total} {p['unit']}, ETA {format_seconds(p.get('eta_s'))}"
        lines.append(f"{s.name:>10}: {text}")
        d = s.detail
        if d.get("step") is not None:
            lines.append(
                f"{'':>12}stage {d['stage']} step {d['step']:,}, {d['tokens']:,} tokens"
                + (f" of {d['budget_tokens']:,}" if d.get("budget_tokens") else "")
                + f", loss {d['loss']:.3f}"
                + (f", {d['tokens_per_s']:,.0f} tokens/s, ETA {format_seconds(d['eta_s'])}" if d.get("eta_s") else "")
                + (f"; {len(d['checkpoints'])} checkpoints, newest {d['checkpoints'][-1]}" if d["checkpoints"] else "")
            )
    return "\n".join(lines)
