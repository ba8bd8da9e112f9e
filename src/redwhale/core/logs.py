"""Logging set-up for the command line: one line per record on stderr, quiet third-party loggers."""

from __future__ import annotations

import logging
import os
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
    _transformers(level)


def _transformers(level: int) -> None:
    """transformers' verbosity and bars. Importing it takes over a second, which ``redwhale status`` must not pay:
    when it is not imported yet, its documented environment variables (read at its import) say the same, unless
    the user set them."""
    quiet = level > logging.DEBUG
    if "transformers" not in sys.modules:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if quiet else "warning")
        if level > logging.INFO:  # -q: no library bars (transformers takes huggingface_hub's setting at import)
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error() if quiet else hf_logging.set_verbosity_warning()
    # transformers draws a bar for every checkpoint it loads or writes: noise beside our own progress
    hf_logging.disable_progress_bar() if quiet else hf_logging.enable_progress_bar()
