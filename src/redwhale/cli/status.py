"""``redwhale status RUN_DIR``: each phase done, running, interrupted or not started, and where training stands."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.core.errors import ConfigError


@app.command("status")
def status(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>).")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Compare with this config (default: the one the run wrote).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where a run stands; works while another process runs it and after a kill."""
    from redwhale.recipe.status import format_status, run_status

    if not run_dir.is_dir():
        raise ConfigError(f"no run folder {run_dir}")
    statuses = run_status(run_dir, config)
    typer.echo(json.dumps([asdict(s) for s in statuses], indent=2, default=str) if as_json else format_status(statuses))
