"""Benchmark tasks through lm-evaluation-harness: the prompts, choices, metrics, few-shot sampling (with the
harness's seed) and batching are the harness's, so numbers compare with published ones. Which tasks and where their
data comes from is the plugins' business (:mod:`redwhale.evaluate.tasks`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redwhale.evaluate.harness import require_lm_eval, task_manager, task_metrics
from redwhale.evaluate.tasks import harness_tasks

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _library_bars(shown: bool) -> Iterator[None]:
    """lm-eval draws its own tqdm bars; ``-q`` hides them (tqdm reads ``TQDM_DISABLE``), for this call only."""
    previous = os.environ.get("TQDM_DISABLE")
    if not shown:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


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
    shown = logging.getLogger("redwhale.progress").isEnabledFor(logging.INFO)
    out: dict[str, Any] = {}
    for k in shots:
        with _library_bars(shown):
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=entries,
                num_fewshot=k,
                limit=limit,
                log_samples=False,
                bootstrap_iters=0,
                task_manager=task_manager(),
            )
        out[f"{k}-shot"] = task_metrics(raw)
    return out
