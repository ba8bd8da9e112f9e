"""Progress of long work, in one style everywhere: a tqdm bar on a terminal, a plain log line every so often when the
output is not a terminal (CI, ``nohup``, Slurm logs), and a small JSON file that ``redwhale status`` reads.

Whether anything is shown follows the logging set-up of the command line: the bar and the lines appear when the
``redwhale.progress`` logger is enabled at INFO, so ``-q`` (WARNING) silences them. The JSON file is written whatever
the verbosity, atomically and at most every ``refresh_s`` seconds, so that another process can read where the work
stands while it runs and after it was killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from redwhale.core.io import atomic_write_json

log = logging.getLogger("redwhale.progress")
PROGRESS_FILE = "_progress.json"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One long task: ``update`` as work is done, ``close`` at the end (or use it as a context manager).

    ``figures`` passed to ``update`` (loss, learning rate, tokens/s...) are shown beside the bar, written to the
    file, and printed in the plain log lines."""

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "it",
        file: Path | None = None,
        refresh_s: float = 2.0,
        log_every_s: float = 30.0,
        initial: float = 0,
    ):
        self.what, self.total, self.unit, self.file = what, total, unit, file
        self.refresh_s, self.log_every_s = refresh_s, log_every_s
        self.done = initial
        self.figures: dict[str, Any] = {}
        self.started = time.monotonic()
        self._initial = initial
        self._last_file = self._last_log = self._last_postfix = float("-inf")
        shown = log.isEnabledFor(logging.INFO)
        self._bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=what,
                unit=unit,
                mininterval=refresh_s,
                dynamic_ncols=True,
                file=sys.stderr,
                leave=True,
            )
            if shown and sys.stderr.isatty()
            else None
        )
        self._lines = shown and self._bar is None
        self._write_file(force=True)

    # ------------------------------------------------------------------------------------------------------ figures
    @property
    def rate(self) -> float | None:
        elapsed = time.monotonic() - self.started
        done = self.done - self._initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    def update(self, n: float = 1, log_now: bool = False, **figures: Any) -> None:
        """``n`` more units done; ``log_now`` forces a plain log line (when lines are shown)."""
        self.done += n
        self.figures.update({k: v for k, v in figures.items() if v is not None})
        now = time.monotonic()
        if self._bar is not None:
            if self.figures and now - self._last_postfix >= self.refresh_s:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._last_postfix = now
            self._bar.update(n)
        elif self._lines and (log_now or now - self._last_log >= self.log_every_s):
            log.info("%s", self.line())
            self._last_log = now
        self._write_file()

    def _postfix(self) -> str:
        return ", ".join(f"{k}={_format(v)}" for k, v in self.figures.items())

    def line(self) -> str:
        """The plain-text form: ``what: done/total unit (pct) | figures | rate, ETA``."""
        total = f"/{_format(self.total)}" if self.total is not None else ""
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        rate = self.rate
        timing = f"{_format(rate)} {self.unit}/s, ETA {format_seconds(self.eta_s)}" if rate else ""
        parts = [f"{self.what}: {_format(self.done)}{total} {self.unit}{pct}", self._postfix(), timing]
        return " | ".join(p for p in parts if p)

    # --------------------------------------------------------------------------------------------------------- file
    def state(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "rate": self.rate,
            "eta_s": self.eta_s,
            "figures": self.figures,
            "updated": time.time(),
            "pid": os.getpid(),
        }

    def _write_file(self, force: bool = False) -> None:
        if self.file is None:
            return
        now = time.monotonic()
        if force or now - self._last_file >= self.refresh_s:
            atomic_write_json(self.file, self.state(), fsync=False)
            self._last_file = now

    def close(self) -> None:
        self._write_file(force=True)
        if self._bar is not None:
            if self.figures:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None
        elif self._lines:
            log.info("%s (done in %s)", self.line(), format_seconds(time.monotonic() - self.started))
            self._lines = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def library_bars() -> Iterator[None]:
    """Within the block, third-party tqdm bars (lm-eval's requests, transformers' GGUF conversion) follow our
    verbosity: hidden when progress is (``-q``); tqdm reads ``TQDM_DISABLE`` when a bar is created."""
    previous = os.environ.get("TQDM_DISABLE")
    if not log.isEnabledFor(logging.INFO):
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


#: What phases hand to long-running functions: ``progress(what, total, unit)`` -> a :class:`Progress`.
ProgressFactory = Callable[..., Progress]


def no_file_progress(what: str, total: float | None = None, unit: str = "it", **kwargs: Any) -> Progress:
    """The default factory: shown per the logging set-up, no status file."""
    return Progress(what, total, unit, **kwargs)
