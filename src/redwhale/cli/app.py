"""The Typer application and its global options; command groups register themselves on it.

Command modules import the package's domain modules inside each command: those import torch, transformers and
datatrove (several seconds), and ``redwhale --help`` or ``redwhale status`` should answer at once.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from redwhale import __version__
from redwhale.core.logs import setup_logging

app = typer.Typer(
    name="redwhale",
    help="Adapt an English-centric LLM to Korean by efficient continual pretraining (RedWhale recipe).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"redwhale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks, debug logs and the libraries' logs.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors (no progress).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    setup_logging(logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO))
