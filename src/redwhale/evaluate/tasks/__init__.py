"""Benchmark tasks as plugins: each module of this package that defines ``PLUGIN`` adds a family of tasks.

A plugin says which task names it owns (``kobest``, ``kobest_boolq``, ``kmmlu``...), checks them before any work, and
turns them into lm-evaluation-harness task entries: the harness's own task names for data from the Hub, or the
harness's task configs with the data source replaced by local files (``eval.data``). Names no plugin owns go to the
harness as they are (any lm-eval task). Adding a family is one new module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redwhale.config.schema import EvalSection
from redwhale.core.source import hub_reachable


@dataclass(frozen=True)
class TaskPlugin:
    """A family of benchmark tasks."""

    name: str
    folder: str  # the harness's task folder of this family (indexed alone when only plugin tasks run)
    owns: Callable[[str], bool]
    expand: Callable[[str], list[str]]  # a name it owns -> the harness task names it stands for (raises ValueError)
    specs: Callable[[list[str], Path | None, str], list[Any]]  # harness task names -> `tasks=` entries (Hub or local)


def _discover() -> list[TaskPlugin]:
    found = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        plugin = getattr(importlib.import_module(f"{__name__}.{module}"), "PLUGIN", None)
        if plugin is not None:
            found.append(plugin)
    return found


PLUGINS: list[TaskPlugin] = _discover()


def plugin_of(name: str) -> TaskPlugin | None:
    return next((p for p in PLUGINS if p.owns(name)), None)


def unknown_tasks(names: list[str]) -> list[tuple[int, str]]:
    """``(index, problem)`` for every task name a plugin owns but does not know (names no plugin owns are left to
    the harness, which knows hundreds of tasks)."""
    problems = []
    for index, name in enumerate(names):
        plugin = plugin_of(name)
        if plugin is None:
            continue
        try:
            plugin.expand(name)
        except ValueError as exc:
            problems.append((index, str(exc)))
    return problems


def harness_folders(names: list[str]) -> tuple[str, ...] | None:
    """The harness task folders that hold ``names``, or None when some name belongs to no plugin (then the whole
    harness is indexed)."""
    plugins = [plugin_of(name) for name in names]
    if any(p is None for p in plugins):
        return None
    return tuple(sorted({p.folder for p in plugins}))


def harness_tasks(names: list[str], data: Path | None, split: str) -> list[Any]:
    """The lm-eval ``tasks=`` entries for ``names``: plugin tasks expanded (local data when ``data`` is set), other
    names passed through."""
    entries: list[Any] = []
    for name in names:
        plugin = plugin_of(name)
        entries += plugin.specs(plugin.expand(name), data, split) if plugin else [name]
    return entries


def benchmark_decision(section: EvalSection) -> dict[str, Any]:
    """Whether the benchmark tasks run, and why (``eval.benchmarks``; ``auto`` asks the Hub, once)."""
    if section.benchmarks == "off" or not section.tasks:
        return {"run": False, "why": "eval.benchmarks is off" if section.tasks else "eval.tasks is empty"}
    if section.benchmarks == "on":
        return {"run": True, "why": "eval.benchmarks is on"}
    if section.data is not None:
        return {"run": True, "why": f"auto: local data in {section.data}"}
    if hub_reachable():
        return {"run": True, "why": "auto: the Hugging Face Hub answered"}
    return {"run": False, "why": "auto: no eval.data and the Hugging Face Hub did not answer (offline)"}
