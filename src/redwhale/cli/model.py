"""``redwhale model``: convert, describe, extend and initialise models; and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

model_app = typer.Typer(help="Load, convert, extend and initialise models.", no_args_is_help=True)
app.add_typer(model_app, name="model")


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


@app.command("demo")
def demo(
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Convert the embedded SmolLM2, show its Korean characters per token and a greedy English sample."""
    from redwhale.demo import run_demo

    run_demo(cache_dir=cache_dir)
