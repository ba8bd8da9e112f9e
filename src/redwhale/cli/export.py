"""``redwhale model export`` (GGUF for llama.cpp and Ollama) and ``redwhale model chat-vector``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.model import model_app

KINDS = "f32, f16, bf16 or q8_0"


@model_app.command("export")
def export(
    model: Annotated[Path, typer.Argument(help="Hugging Face model folder (e.g. runs/<name>/train/model).")],
    out: Annotated[Path, typer.Option("--out", help="Output .gguf file.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format (gguf).")] = "gguf",
    quant: Annotated[str, typer.Option("--quant", help=f"Tensor type: {KINDS}.")] = "f16",
    base: Annotated[
        str | None, typer.Option("--base", help="The base model it was adapted from (its pre-tokenizer type).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Load the file with llama-cpp-python, when installed.")
    ] = True,
) -> None:
    """Write a GGUF file that llama.cpp, Ollama and LM Studio load: architecture metadata, tensors, the merged
    tokenizer (pre-tokenizer type of the base), special tokens and chat template."""
    from redwhale.core.errors import ConfigError
    from redwhale.export.gguf import export_gguf

    if fmt != "gguf":
        raise ConfigError(f"--format: only gguf is supported, got {fmt!r}")
    result = export_gguf(model, out, quant, base, check=check)
    typer.echo(f"wrote {out} ({result['bytes'] / 2**20:,.1f} MiB, {result['seconds']:.1f} s)")
    if result.get("llama_cpp_check"):
        typer.echo(f"llama.cpp: {result['llama_cpp_check']}")


@model_app.command("chat-vector")
def chat_vector(
    base: Annotated[str, typer.Option("--base", help="The base model before adaptation.")],
    instruct: Annotated[str, typer.Option("--instruct", help="The instruction-tuned model of the same base.")],
    adapted: Annotated[Path, typer.Option("--adapted", help="The adapted model (grown vocabulary).")],
    out: Annotated[Path, typer.Option("--out", help="Output model folder.")],
    scale: Annotated[float, typer.Option("--scale", help="Multiplier of (instruct - base).")] = 1.0,
) -> None:
    """adapted + scale x (instruct - base) on every base weight; the new vocabulary rows get no difference."""
    from redwhale.export.chat_vector import apply_chat_vector

    result = apply_chat_vector(base, instruct, adapted, out, scale)
    typer.echo(f"wrote {out} ({result['tensors']} tensors moved, {result['seconds']:.1f} s)")
