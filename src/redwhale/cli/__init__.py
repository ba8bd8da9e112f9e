"""The ``redwhale`` command line: a thin map from commands to functions (one module per command group).

No logic lives here: each command parses its options and calls one function of the package. Errors the user can fix
are printed as one line (``error: ...``) with exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from redwhale.cli import (  # noqa: F401  (each module registers its commands)
    config,
    doctor,
    evaluate,
    export,
    model,
    prepare,
    run,
    status,
    tokenizer,
    train,
)
from redwhale.cli.app import app
from redwhale.core.errors import RedwhaleError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="redwhale", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted: finished phases are kept; rerun the same command to continue", err=True)
        return 130
    except RedwhaleError as exc:
        if "--debug" in args:
            raise
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        return exc.exit_code
    except OSError as exc:  # disk full, permission denied, a file gone: the user's to fix, in one line
        if "--debug" in args:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 1
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        if "--debug" in args:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(
            f"error: internal error ({type(exc).__name__}: {first}); rerun with --debug for the traceback", err=True
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
