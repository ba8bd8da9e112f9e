"""``redwhale run CONFIG``: the whole adaptation, resumable, ending with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

PHASES = "prepare, tokenizer, extend, train, eval, report"


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="YAML run config.")],
    only: Annotated[str | None, typer.Option(help=f"Comma-separated phases to run ({PHASES}).")] = None,
    force: Annotated[str | None, typer.Option(help="Comma-separated phases to redo even if up to date.")] = None,
) -> None:
    """Run every phase (corpus, tokenizer, init, training, eval, report); finished phases are skipped."""
    from redwhale.config import load_config
    from redwhale.errors import ConfigError
    from redwhale.runner import run as run_all

    known = [p.strip() for p in PHASES.split(",")]
    lists = {}
    for option, value in (("--only", only), ("--force", force)):
        names = [n.strip() for n in value.split(",") if n.strip()] if value else None
        bad = [n for n in names or [] if n not in known]
        if bad:
            raise ConfigError(f"{option}: unknown phase {bad[0]!r}; phases: {PHASES}")
        lists[option] = names
    print_result(run_all(load_config(config), lists["--only"], lists["--force"]))


def print_result(result: dict) -> None:
    """One line per phase, then where the report is."""
    for phase, status in result["phases"].items():
        shown = status if isinstance(status, str) else f"done in {status.get('seconds', 0):.0f} s"
        typer.echo(f"{phase:>10}: {shown}")
    if result["report"]:
        typer.echo(f"report: {result['report']}")
