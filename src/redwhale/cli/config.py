"""``redwhale config``: validate, show and document run configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

config_app = typer.Typer(help="Validate and show run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="YAML run config.")]) -> None:
    """Check a run config against the schema and what is installed (init methods, tasks); report every problem."""
    from redwhale.config import load_config
    from redwhale.recipe.checks import check

    cfg = load_config(file)
    check(cfg)
    typer.echo(f"{file}: valid (run {cfg.name!r})")


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="YAML run config (default: all defaults).")] = None,
) -> None:
    """Print the fully resolved config (every field, defaults filled in)."""
    from redwhale.config import RunConfig, load_config, to_yaml

    typer.echo(to_yaml(load_config(file) if file else RunConfig()), nl=False)


@config_app.command("reference")
def config_reference() -> None:
    """Print the reference config: every field with its default, unit and one-line description."""
    from redwhale.config import reference

    typer.echo(reference(), nl=False)
