"""``redwhale run CONFIG``: every phase in order, skipping what is up to date, resuming what was interrupted.

The phases are the typed functions of :mod:`redwhale.recipe.phases`; this module reads their signatures to know
what each takes (config sections, the run's seed, values derived from the config, artifacts of earlier phases) and
hashes exactly that, plus the content of the input files those sections name (:mod:`redwhale.recipe.inputs`) and the
hashes of the phases it reads from. So changing a stage's learning rate redoes training, evaluation, export and the
report, not the tokenizer; editing the corpus file in place redoes everything. A finished phase is committed with its
hash (:mod:`redwhale.recipe.rundir`); a phase killed halfway keeps its ``.partial`` folder, from which training
continues at its last checkpoint and the corpus pipeline at its last finished task.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redwhale.config import RunConfig, to_yaml
from redwhale.core.errors import RedwhaleError
from redwhale.core.io import atomic_write_text
from redwhale.recipe import artifacts as art
from redwhale.recipe.checks import check
from redwhale.recipe.inputs import CACHE_FILE, Digests
from redwhale.recipe.phases import PhaseContext
from redwhale.recipe.plan import Phase, declared_phases, derived_values, phase_hashes, stored_artifact
from redwhale.recipe.rundir import RunDir

log = logging.getLogger(__name__)


def _arguments(phase: Phase, cfg: RunConfig, derived: dict, made: dict[type, Any], ctx: PhaseContext) -> dict:
    kwargs: dict[str, Any] = {}
    for p in phase.params:
        if p.kind == "context":
            kwargs[p.name] = ctx
        elif p.kind in ("section", "scalar"):
            kwargs[p.name] = getattr(cfg, p.name)
        elif p.kind == "derived":
            kwargs[p.name] = derived[p.name]
        else:
            kwargs[p.name] = made[p.annotation]
    return kwargs


@dataclass
class RunResult:
    run_dir: Path
    phases: dict[str, Any]
    report: Path | None


def _missing_inputs(phase: Phase, made: dict[type, Any], producers: dict[type, str], root: Path) -> None:
    missing = [producers[p.annotation] for p in phase.params if p.kind == "artifact" and p.annotation not in made]
    if missing:
        raise RedwhaleError(
            f"phase {phase.name} needs {', '.join(missing)}, which {'has' if len(missing) == 1 else 'have'} not run "
            f"in {root} with this config: run {'it' if len(missing) == 1 else 'them'} first "
            f"(--only {','.join([*missing, phase.name])}, or leave out --only)"
        )


def run(cfg: RunConfig, only: list[str] | None = None, force: list[str] | None = None) -> RunResult:
    """Run every phase that is not up to date (``only``: just these; ``force``: redo these and every later one)."""
    check(cfg)
    phases = declared_phases()
    run_dir = RunDir(Path(cfg.run_dir) / cfg.name)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir.root / "config.yaml", to_yaml(cfg))
    digests = Digests(run_dir.root / CACHE_FILE)
    derived = derived_values(cfg, phases)
    hashes = phase_hashes(cfg, phases, derived, digests)
    digests.save()
    producers = {p.output: p.name for p in phases}
    made: dict[type, Any] = {}
    statuses: dict[str, Any] = {}
    forcing = False
    for phase in phases:
        config_hash = hashes[phase.name]
        done = run_dir.is_done(phase.name, config_hash)
        forcing = forcing or phase.name in (force or [])
        if only and phase.name not in only:
            if done:
                made[phase.output] = stored_artifact(run_dir, phase)
            statuses[phase.name] = "not asked"
            continue
        if done and not forcing:
            made[phase.output] = stored_artifact(run_dir, phase)
            statuses[phase.name] = "up to date"
            log.info("phase %s: up to date", phase.name)
            continue
        _missing_inputs(phase, made, producers, run_dir.root)
        work = run_dir.partial(phase.name, config_hash)
        log.info("phase %s: running (%s)", phase.name, work)
        started = time.perf_counter()
        artifact = phase.run(**_arguments(phase, cfg, derived, made, PhaseContext(work, cfg.name, cfg.cache_dir)))
        seconds = round(time.perf_counter() - started, 1)
        summary = {"artifact": art.fields_of(artifact), "seconds": seconds, "derived": _derived_of(phase, derived)}
        made[phase.output] = art.rerooted(artifact, run_dir.commit(phase.name, config_hash, summary))
        statuses[phase.name] = summary
        log.info("phase %s: done in %.0f s", phase.name, seconds)
    report = made.get(art.Report)
    return RunResult(run_dir.root, statuses, report.html if report is not None and report.html.is_file() else None)


def _derived_of(phase: Phase, derived: dict[str, Any]) -> dict[str, Any]:
    return {p.name: derived.get(p.name) for p in phase.params if p.kind == "derived"}
