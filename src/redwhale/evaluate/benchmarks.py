"""Benchmark tasks through lm-evaluation-harness: the prompts, choices, metrics, few-shot sampling (with the
harness's seed) and batching are the harness's, so numbers compare with published ones. Which tasks and where their
data comes from is the plugins' business (:mod:`redwhale.evaluate.tasks`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from redwhale.core.progress import library_bars
from redwhale.evaluate.harness import require_lm_eval, task_manager, task_metrics
from redwhale.evaluate.tasks import harness_folders, harness_tasks

log = logging.getLogger(__name__)


def run_benchmarks(
    model,
    tokenizer,
    tasks: list[str],
    data: Path | None,
    split: str,
    shots: list[int],
    limit: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score ``model`` on every task at every number of shots: ``{"<k>-shot": {task: {metric: value}}}``."""
    require_lm_eval()
    import lm_eval  # optional extra
    from lm_eval.models.huggingface import HFLM

    entries = harness_tasks(tasks, data, split)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out: dict[str, Any] = {}
    for k in shots:
        with library_bars():
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=entries,
                num_fewshot=k,
                limit=limit,
                log_samples=False,
                bootstrap_iters=0,
                task_manager=task_manager(harness_folders(tasks)),
            )
        out[f"{k}-shot"] = task_metrics(raw)
    return out
