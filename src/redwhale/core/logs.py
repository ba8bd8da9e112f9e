"""Logging set-up for the command line: one line per record on stderr, quiet third-party loggers."""

from __future__ import annotations

import logging
import sys

_NOISY = ("urllib3", "filelock", "fsspec", "datasets", "matplotlib", "PIL", "httpx", "httpcore", "asyncio")


def setup_logging(level: int = logging.INFO) -> None:
    """Route ``redwhale`` logs to stderr at ``level``; third-party libraries at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("redwhale").setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # datatrove logs through loguru, to stderr at DEBUG by default: keep only its warnings
        from loguru import logger as loguru_logger

        loguru_logger.remove()
        loguru_logger.add(sys.stderr, level="DEBUG" if level <= logging.DEBUG else "WARNING")
        if level > logging.DEBUG:
            # each datatrove task re-adds an INFO sink on stderr (add_task_logger), which floods a run's output;
            # our own summary (stats.json, summary.md) says what its stats say. --debug shows them again.
            loguru_logger.disable("datatrove")
        else:
            loguru_logger.enable("datatrove")
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error() if level > logging.DEBUG else hf_logging.set_verbosity_warning()
        # transformers draws a bar for every checkpoint it loads or writes: noise beside our own progress
        hf_logging.disable_progress_bar() if level > logging.DEBUG else hf_logging.enable_progress_bar()
    except ImportError:
        pass
