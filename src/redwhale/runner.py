"""``redwhale run CONFIG``: every phase in order, skipping what is up to date, resuming what was interrupted.

The phases: ``prepare`` (corpus), ``tokenizer`` (sweep, choice, merge), ``extend`` (init comparison and the extended
model), ``train`` (the stages), ``eval`` (base against adapted), ``report``. Each phase's hash covers the config fields
it reads and the hashes of the phases it reads from, so changing the learning rate of a stage redoes training, eval
and the report but not the tokenizer. A finished phase is committed with its hash (:mod:`redwhale.rundir`); a phase
killed halfway leaves its ``.partial`` folder, from which training continues at its last checkpoint and the corpus
pipeline at its last finished task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redwhale import __version__
from redwhale.config import RunConfig, to_yaml
from redwhale.rundir import RunDir, atomic_write_text, stable_hash

log = logging.getLogger(__name__)


@dataclass
class Phase:
    name: str
    reads: tuple[str, ...]  # config sections whose values change the result
    after: tuple[str, ...]  # phases whose outputs it reads
    run: Callable[..., dict[str, Any]]


def _phases() -> list[Phase]:
    from redwhale import phases, report

    return [
        Phase(
            "prepare",
            ("corpus", "prepare", "seed", "tokenizer.script"),
            (),
            lambda cfg, work, out: phases.prepare_phase(cfg, work),
        ),
        Phase(
            "tokenizer",
            ("model", "tokenizer", "seed"),
            ("prepare",),
            lambda cfg, work, out: phases.tokenizer_phase(cfg, work, out["prepare"]),
        ),
        Phase(
            "extend",
            ("model", "extend", "seed", "corpus.english"),
            ("prepare", "tokenizer"),
            lambda cfg, work, out: phases.extend_phase(cfg, work, out["prepare"], out["tokenizer"] / "merged"),
        ),
        Phase(
            "train",
            ("train", "seed", "corpus.english", "corpus.heldout_fraction"),
            ("prepare", "extend"),
            lambda cfg, work, out: phases.train_phase(cfg, work, out["prepare"], out["extend"] / "model"),
        ),
        Phase(
            "eval",
            ("eval", "model", "corpus.english"),
            ("prepare", "train"),
            lambda cfg, work, out: phases.eval_phase(cfg, work, out["prepare"], out["train"] / "model"),
        ),
        Phase(
            "report",
            ("report", "model"),
            ("prepare", "tokenizer", "extend", "train", "eval"),
            lambda cfg, work, out: report.write_report(cfg, work, out),
        ),
    ]


def _section(cfg: RunConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def phase_hashes(cfg: RunConfig) -> dict[str, str]:
    """The hash of each phase: its config fields, the hashes of the phases it reads, and the code version."""
    hashes: dict[str, str] = {}
    for phase in _phases():
        hashes[phase.name] = stable_hash(
            {
                "phase": phase.name,
                "version": __version__,
                "config": {key: _section(cfg, key) for key in phase.reads},
                "after": {name: hashes[name] for name in phase.after},
            }
        )
    return hashes


def run(cfg: RunConfig, only: list[str] | None = None, force: list[str] | None = None) -> dict[str, Any]:
    """Run every phase that is not up to date; returns ``{phase: status}`` and the report's path."""
    run_dir = RunDir(Path(cfg.run_dir) / cfg.name)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir.root / "config.yaml", to_yaml(cfg))
    hashes = phase_hashes(cfg)
    outputs: dict[str, Path] = {}
    statuses: dict[str, Any] = {}
    for phase in _phases():
        config_hash = hashes[phase.name]
        if only and phase.name not in only:
            if run_dir.is_done(phase.name, config_hash):
                outputs[phase.name] = run_dir.path(phase.name)
            statuses[phase.name] = "not asked"
            continue
        if run_dir.is_done(phase.name, config_hash) and phase.name not in (force or []):
            outputs[phase.name] = run_dir.path(phase.name)
            statuses[phase.name] = "up to date"
            log.info("phase %s: up to date", phase.name)
            continue
        missing = [name for name in phase.after if name not in outputs]
        if missing:
            raise RuntimeError(f"phase {phase.name} needs {missing}, which did not run")
        work = run_dir.partial(phase.name, config_hash)
        log.info("phase %s: running (%s)", phase.name, work)
        started = time.perf_counter()
        summary = phase.run(cfg, work, outputs)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        outputs[phase.name] = run_dir.commit(phase.name, config_hash, summary)
        statuses[phase.name] = summary
        log.info("phase %s: done in %.0f s", phase.name, summary["seconds"])
    report = run_dir.path("report") / "report.html"
    return {"run_dir": str(run_dir.root), "phases": statuses, "report": str(report) if report.is_file() else None}
