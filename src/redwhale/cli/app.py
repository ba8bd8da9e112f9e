"""The Typer application and its global options; command groups register themselves on it."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from redwhale import __version__

app = typer.Typer(
    name="redwhale",
    help="Adapt an English-centric LLM to Korean by efficient continual pretraining (RedWhale recipe).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Set by the global --debug option; read by the entry point to decide whether to show tracebacks.
state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"redwhale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    state["debug"] = debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    from redwhale.logs import setup_logging

    setup_logging(level)
