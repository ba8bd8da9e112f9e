"""What every benchmark plugin needs from lm-evaluation-harness (the optional ``eval`` extra): its task configs,
and its results read back generically (every metric of every task, whatever the task)."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from redwhale.core.errors import missing_extra


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise missing_extra("lm-eval", "eval")


@functools.cache
def task_manager():
    """The harness's task index, built once per process (indexing its thousands of task files takes seconds)."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager  # optional extra: imported when a benchmark runs

    return TaskManager()


def harness_config(task: str) -> dict[str, Any]:
    """The harness's own YAML config of ``task`` (prompts, metrics, data source), as a dict."""
    from lm_eval.tasks._yaml_loader import load_yaml

    index = task_manager()._index
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
