"""What every benchmark plugin needs from lm-evaluation-harness (the optional ``eval`` extra): its task configs,
and its results read back generically (every metric of every task, whatever the task)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from redwhale.core.errors import missing_extra


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise missing_extra("lm-eval", "eval")


@functools.cache
def task_manager(folders: tuple[str, ...] | None = None):
    """The harness's task index, built once per process: of its task folders ``folders`` only (milliseconds), or of
    every task when None (its thousands of task files take tens of seconds to index on a small machine)."""
    require_lm_eval()
    import lm_eval.tasks  # optional extra: imported when a benchmark runs

    if folders is None:
        return lm_eval.tasks.TaskManager()
    root = Path(lm_eval.tasks.__file__).parent
    return lm_eval.tasks.TaskManager(include_defaults=False, include_path=[str(root / f) for f in folders])


def harness_config(task: str, folder: str | None = None) -> dict[str, Any]:
    """The harness's own YAML config of ``task`` (prompts, metrics, data source), as a dict; ``folder``: the
    harness's task folder that holds it (indexed alone, fast)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    index = task_manager((folder,) if folder else None)._index
    if task not in index:
        raise ValueError(f"lm-evaluation-harness has no task {task!r}")
    return load_yaml(index[task].yaml_path, resolve_func=True)


def task_metrics(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from ``simple_evaluate``'s result: every numeric metric (``acc``, ``acc_norm``,
    ``f1``, ``exact_match``...; a filter other than ``none`` is kept in the name), and the examples scored."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in raw.get("results", {}).items():
        row: dict[str, float] = {}
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                continue
            metric, filter_name = key.split(",", 1)
            row[metric if filter_name == "none" else f"{metric}[{filter_name}]"] = float(value)
        samples = raw.get("n-samples", {}).get(task)
        if samples:
            row["examples"] = float(samples.get("effective", samples.get("original", 0)))
        if row:
            out[task] = row
    return out
