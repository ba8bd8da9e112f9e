"""Checks of a run config against what is installed, before any heavy work: plugin names (init methods, evaluation
tasks) that the schema cannot know, each problem reported with the nearest valid name."""

from __future__ import annotations

import difflib

from redwhale.config.schema import RunConfig
from redwhale.core.errors import ConfigError
from redwhale.evaluate.tasks import unknown_tasks
from redwhale.models.init import METHODS


def _near(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (choose from {', '.join(valid)})"


def problems(cfg: RunConfig) -> list[str]:
    """Every problem of ``cfg`` that validation against the schema cannot see."""
    found = []
    methods = sorted(METHODS)
    if cfg.extend.init not in METHODS:
        found.append(f"extend.init: unknown method {cfg.extend.init!r}{_near(cfg.extend.init, methods)}")
    for index, method in enumerate([] if cfg.extend.compare == "auto" else cfg.extend.compare):
        if method not in METHODS:
            found.append(f"extend.compare[{index}]: unknown method {method!r}{_near(method, methods)}")
    for path, message in unknown_tasks(cfg.eval.tasks):
        found.append(f"eval.tasks[{path}]: {message}")
    return found


def check_init(method: str) -> None:
    """An init method name, as a command-line option gives it."""
    if method not in METHODS:
        raise ConfigError(f"--init: unknown method {method!r}{_near(method, sorted(METHODS))}")


def check_tasks(tasks: list[str]) -> None:
    """Benchmark task names, as a command-line option gives them."""
    found = [f"--tasks: {message}" for _, message in unknown_tasks(tasks)]
    if found:
        raise ConfigError("; ".join(found))


def check(cfg: RunConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem :func:`problems` finds."""
    found = problems(cfg)
    if found:
        raise ConfigError(f"config: {len(found)} problem{'s' if len(found) > 1 else ''}: " + "; ".join(found))
