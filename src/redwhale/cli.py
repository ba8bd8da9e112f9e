"""The ``redwhale`` command line: a thin map from commands to functions.

No logic lives here: each command parses its options and calls one function of the package. Errors the user can fix
are printed as one line (``error: ...``) with exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from redwhale import __version__
from redwhale.errors import RedwhaleError

app = typer.Typer(
    name="redwhale",
    help="Adapt an English-centric LLM to Korean by efficient continual pretraining (RedWhale recipe).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Validate and show run configs.", no_args_is_help=True)
model_app = typer.Typer(help="Load, convert, extend and initialise models.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(model_app, name="model")

_state = {"debug": False}


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
    _state["debug"] = debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    from redwhale.logs import setup_logging

    setup_logging(level)


# ---------------------------------------------------------------------------------------------------------- config
@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="YAML run config.")]) -> None:
    """Check a run config against the schema; report every problem."""
    from redwhale.config import load_config

    cfg = load_config(file)
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


# ----------------------------------------------------------------------------------------------------------- model
@model_app.command("convert")
def model_convert(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias (smollm2-135m).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a standard Hugging Face model folder).")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the Hub.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Write a standard Hugging Face folder (safetensors, config, tokenizer, generation config)."""
    from redwhale.models.source import convert

    path = convert(src, out, revision=revision, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    typer.echo(f"wrote {path}")


@model_app.command("info")
def model_info(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias.")],
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Show what a model spec resolves to, its size and its tokenizer."""
    from redwhale.models.info import model_info as info

    for key, value in info(src, cache_dir=cache_dir).items():
        typer.echo(f"{key:>22}: {value}")


# ------------------------------------------------------------------------------------------------------------ demo
@app.command("demo")
def demo(
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Convert the embedded SmolLM2, show its Korean characters per token and a greedy English sample."""
    from redwhale.demo import run_demo

    run_demo(cache_dir=cache_dir)


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
        if _state["debug"] or "--debug" in args:
            raise
        message = " ".join(str(exc).split())
        typer.echo(f"error: {message}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
