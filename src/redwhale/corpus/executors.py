"""datatrove executors for the corpus pipeline: local processes, Slurm or Ray, quiet unless asked, with progress.

datatrove's local executor starts its workers with ``forkserver``, so they do not inherit this process's logging:
each task adds an INFO sink on stderr (``add_task_logger``) and prints its pipeline and stats table, hundreds of lines
per run. :class:`QuietLocalExecutor` runs each task with stderr filtered to datatrove's WARNING and worse (the task's
own log file under ``logs/`` still gets everything); ``--debug`` shows it all.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor

from redwhale.config.schema import PrepareSection
from redwhale.core.progress import Progress, ProgressFactory

_CHATTY = re.compile(r"^\S+ \S+ \| (TRACE|DEBUG|INFO|SUCCESS)\s*\|")


class _WarningsOnly(io.TextIOBase):
    """A text stream that passes everything but datatrove's TRACE/DEBUG/INFO/SUCCESS records to ``target``."""

    def __init__(self, target):
        self.target = target

    def write(self, text: str) -> int:
        if not _CHATTY.match(text):
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor; ``verbose=False`` filters each task's stderr to warnings and errors."""

    def __init__(self, *args: Any, verbose: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.verbose = verbose

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        if self.verbose:
            return super()._run_for_rank(rank, local_rank, node_rank)
        with contextlib.redirect_stderr(_WarningsOnly(sys.stderr)):
            return super()._run_for_rank(rank, local_rank, node_rank)


def make_executor(cfg: PrepareSection, pipeline: list, tasks: int, logs: Path, name: str, verbose: bool, depends=None):
    """The executor of one stage, of the kind ``prepare.executor`` names."""
    if cfg.executor == "local":
        return QuietLocalExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(cfg.workers, tasks),
            logging_dir=str(logs),
            depends=depends,
            verbose=verbose,
        )
    options = dict(cfg.executor_options)
    if cfg.executor == "slurm":
        return SlurmPipelineExecutor(
            pipeline=pipeline, tasks=tasks, logging_dir=str(logs), job_name=name, depends=depends, **options
        )
    return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=str(logs), depends=depends, **options)


def _tallies(folder: Path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for path in folder.glob("*.json") if folder.is_dir() else []:
        key = path.name.split(".")[1]
        try:
            totals[key] = totals.get(key, 0) + int(json.loads(path.read_text())["count"])
        except (OSError, ValueError, KeyError):
            continue
    return totals


class StageProgress:
    """Shows a stage's progress while its executor runs: tasks completed (datatrove's completion markers) and the
    documents the tally steps counted so far, polled from a background thread."""

    def __init__(self, executor, logs: Path, tallies: Path, name: str, progress: ProgressFactory, every_s: float = 1.0):
        self.completions = logs / "completions"
        self.tallies, self.every_s = tallies, every_s
        self.bar: Progress = progress(f"prepare: {name}", total=executor.world_size, unit="task")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._seen = 0

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            self._update()

    def _update(self) -> None:
        done = len(list(self.completions.iterdir())) if self.completions.is_dir() else 0
        self.bar.update(done - self._seen, **{f"docs {k}": v for k, v in sorted(_tallies(self.tallies).items())})
        self._seen = done

    def wait(self, poll_s: float = 10.0) -> None:
        """Block until every task of the stage has completed (for executors that only submit, such as Slurm)."""
        while (len(list(self.completions.iterdir())) if self.completions.is_dir() else 0) < self.bar.total:
            self._stop.wait(poll_s)

    def __enter__(self) -> StageProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()
