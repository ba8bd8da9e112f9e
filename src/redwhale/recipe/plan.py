"""What a run would do, read from the phase functions' signatures: each phase's inputs, values derived from the
config, and the hash that says whether a finished phase is up to date.

Light on purpose (no torch, no transformers): ``redwhale status`` computes the same hashes in well under a second.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redwhale import __version__
from redwhale.config import RunConfig
from redwhale.config.base import Section, hashed, input_values
from redwhale.core.io import stable_hash
from redwhale.recipe import artifacts as art
from redwhale.recipe.inputs import Digests
from redwhale.recipe.phases import PHASES, Derived, PhaseContext
from redwhale.recipe.rundir import RunDir


@dataclass(frozen=True)
class Param:
    """One input of a phase, as its signature declares it."""

    name: str
    kind: str  # context | section | scalar | derived | artifact
    annotation: Any
    derived: Derived | None = None


@dataclass(frozen=True)
class Phase:
    name: str
    run: Callable[..., Any]
    output: type
    params: tuple[Param, ...]

    def after(self, producers: dict[type, str]) -> list[str]:
        """The phases whose artifacts this one takes."""
        return [producers[p.annotation] for p in self.params if p.kind == "artifact"]


def _param(name: str, hint: Any, producers: dict[type, str], phase: str) -> Param:
    if hint is PhaseContext:
        return Param(name, "context", hint)
    if typing.get_origin(hint) is typing.Annotated:
        marks = [m for m in typing.get_args(hint)[1:] if isinstance(m, Derived)]
        if marks:
            return Param(name, "derived", typing.get_args(hint)[0], marks[0])
    if isinstance(hint, type) and issubclass(hint, Section):
        field = RunConfig.model_fields.get(name)
        if field is None or field.annotation is not hint:
            raise TypeError(f"phase {phase}: parameter {name}: {hint.__name__} is not the config's {name!r} section")
        return Param(name, "section", hint)
    if hint in producers:
        return Param(name, "artifact", hint)
    if name in RunConfig.model_fields and hint in (int, float, str, bool):
        return Param(name, "scalar", hint)
    raise TypeError(f"phase {phase}: cannot tell where parameter {name!r} ({hint}) comes from")


def declared_phases() -> list[Phase]:
    """The phases of :data:`redwhale.recipe.phases.PHASES`, their inputs read from their signatures."""
    producers: dict[type, str] = {}
    out = []
    for name, function in PHASES:
        hints = typing.get_type_hints(function, include_extras=True)
        output = hints.pop("return")
        params = tuple(
            _param(p, hints[p], producers, name) for p in inspect.signature(function).parameters if p in hints
        )
        out.append(Phase(name, function, output, params))
        producers[output] = name
    return out


def derived_values(cfg: RunConfig, phases: list[Phase], probe: bool = True) -> dict[str, Any]:
    """Every derived input, computed once (``probe=False`` leaves out those that ask the machine or network)."""
    values: dict[str, Any] = {}
    for phase in phases:
        for p in phase.params:
            if p.kind == "derived" and (probe or not p.derived.probes):
                values.setdefault(p.name, p.derived.compute(cfg))
    return values


def hash_inputs(cfg: RunConfig, phase: Phase, derived: dict[str, Any], digests: Digests | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    files: dict[str, list[str]] = {}
    for p in phase.params:
        if p.kind == "section":
            section = object.__getattribute__(cfg, p.name)
            config[p.name] = hashed(section, keep_inputs=digests is None)
            if digests is not None:
                revision = object.__getattribute__(section, "revision") if p.name == "model" else None
                files[p.name] = [digests.value(v, revision) for v in input_values(section)]
        elif p.kind == "scalar":
            config[p.name] = object.__getattribute__(cfg, p.name)
        elif p.kind == "derived":
            config[p.name] = derived.get(p.name, "<not computed>")
    return {"config": config, "files": files}


def phase_hashes(
    cfg: RunConfig, phases: list[Phase], derived: dict[str, Any], digests: Digests | None
) -> dict[str, str]:
    """The hash of each phase: its inputs (see the module docstring), the phases it reads and the code version."""
    producers = {p.output: p.name for p in phases}
    hashes: dict[str, str] = {}
    for phase in phases:
        hashes[phase.name] = stable_hash(
            {
                "phase": phase.name,
                "version": __version__,
                **hash_inputs(cfg, phase, derived, digests),
                "after": {name: hashes[name] for name in phase.after(producers)},
            }
        )
    return hashes


def stored_artifact(run_dir: RunDir, phase: Phase) -> Any:
    marker = run_dir.marker(phase.name)
    return art.load(phase.output, run_dir.path(phase.name), (marker.summary if marker else {}).get("artifact", {}))


def phase_names() -> list[str]:
    return [name for name, _ in PHASES]


def artifact_of(run_dir: RunDir, name: str) -> Any:
    """The artifact of a finished phase (None when the phase has not finished)."""
    for phase in declared_phases():
        if phase.name == name and run_dir.marker(name) is not None:
            return stored_artifact(run_dir, phase)
    return None
