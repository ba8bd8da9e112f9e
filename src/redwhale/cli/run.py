"""``redwhale run CONFIG``: the whole adaptation, resumable, ending with a report; ``redwhale demo``; ``redwhale
report RUN_DIR`` (the report as the run stands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.core.errors import ConfigError

PHASES = "prepare, tokenizer, extend, train, eval, export, report"


def _phase_list(option: str, value: str | None) -> list[str] | None:
    known = [p.strip() for p in PHASES.split(",")]
    names = [n.strip() for n in value.split(",") if n.strip()] if value else None
    bad = [n for n in names or [] if n not in known]
    if bad:
        raise ConfigError(f"{option}: unknown phase {bad[0]!r}; phases: {PHASES}")
    return names


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="YAML run config.")],
    only: Annotated[str | None, typer.Option(help=f"Comma-separated phases to run ({PHASES}).")] = None,
    force: Annotated[
        str | None, typer.Option(help="Comma-separated phases to redo even if up to date (and every later one).")
    ] = None,
) -> None:
    """Run every phase (corpus, tokenizer, init, training, eval, export, report); finished phases are skipped."""
    from redwhale.config import load_config
    from redwhale.recipe.runner import run as run_all

    print_result(run_all(load_config(config), _phase_list("--only", only), _phase_list("--force", force)))


def print_result(result) -> None:
    """One line per phase, then where the report is."""
    for phase, status in result.phases.items():
        shown = status if isinstance(status, str) else f"done in {status.get('seconds', 0):.0f} s"
        typer.echo(f"{phase:>10}: {shown}")
    if result.report:
        typer.echo(f"report: {result.report}")


@app.command("demo")
def demo(
    run_dir: Annotated[Path | None, typer.Option(help="Where runs go (default: the config's, runs/).")] = None,
) -> None:
    """Adapt the embedded SmolLM2 to Korean with konlpy's text: configs/demo.yaml, every phase, with a report."""
    from redwhale.recipe.demo import run_demo

    print_result(run_demo(run_dir))


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>).")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write it (default: RUN_DIR/report-now).")] = None,
) -> None:
    """Draw the report of a run as it stands, while it runs or after it stopped (the run is not touched)."""
    from redwhale.recipe.report import report_now

    if not run_dir.is_dir():
        raise ConfigError(f"no run folder {run_dir}")
    typer.echo(f"report: {report_now(run_dir, out)}")
