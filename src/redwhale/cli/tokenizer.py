"""``redwhale tokenizer``: train a new-language tokenizer, sweep vocabulary sizes, merge into a base tokenizer.

Options left out take the values of ``--config`` (its ``tokenizer`` section), else the schema's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.cli.options import section_options
from redwhale.cli.prepare import corpus_inputs
from redwhale.config.schema import SCRIPT_NAMES, ModelSection, TokenizerSection
from redwhale.core.errors import ConfigError
from redwhale.core.source import LoadOptions

tokenizer_app = typer.Typer(help="Train, sweep and merge new-language tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

Base = Annotated[str, typer.Option("--base", help="Base model or tokenizer.")]
Corpus = Annotated[list[str] | None, typer.Option("--corpus", help="Corpus file, folder or glob (repeatable).")]
TextField = Annotated[str | None, typer.Option(help="JSONL/Parquet field holding the text (default: text).")]
Format = Annotated[str | None, typer.Option("--format", help="auto, jsonl, parquet, text or hf (default: auto).")]
Script = Annotated[str, typer.Option(help=f"Writing system of the new language ({', '.join(SCRIPT_NAMES)}).")]
Config = Annotated[Path | None, typer.Option("--config", help="Run config (its tokenizer section).")]
CacheDir = Annotated[Path | None, typer.Option(help="GGUF conversion cache.")]
DEFAULT_BASE = ModelSection.model_fields["base"].default


def _inputs(corpus, text_field, fmt):
    inputs = corpus_inputs(corpus, text_field, fmt)
    if not inputs:
        raise ConfigError("give at least one --corpus")
    return inputs


@tokenizer_app.command("train")
@section_options(TokenizerSection, "tokenizer", exclude=("size", "sizes"))
def train(
    out: Annotated[Path, typer.Option("--out", help="Output tokenizer folder.")],
    size: Annotated[int, typer.Option("--size", help="Vocabulary size of the new tokenizer (tokens).")],
    tokenizer: TokenizerSection,
    corpus: Corpus = None,
    base: Base = DEFAULT_BASE,
    text_field: TextField = None,
    fmt: Format = None,
    script: Script = "hangul",
    config: Config = None,
    cache_dir: CacheDir = None,
) -> None:
    """Train a tokenizer of the base's kind (byte-level BPE or SentencePiece) on a corpus, streamed."""
    from redwhale.tokenizer.commands import train_command

    report = train_command(
        base, _inputs(corpus, text_field, fmt), tokenizer, size, out, script, LoadOptions(cache_dir=cache_dir)
    )
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))


@tokenizer_app.command("merge")
def merge(
    new: Annotated[Path, typer.Option("--new", help="Folder of the trained new-language tokenizer.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder of the merged tokenizer.")],
    base: Base = DEFAULT_BASE,
    size: Annotated[int | None, typer.Option(help="Merge only the first SIZE tokens of the new tokenizer.")] = None,
    script: Script = "hangul",
    pad_to_multiple_of: Annotated[int, typer.Option(help="Pad the vocabulary to a multiple (0: no padding).")] = 64,
    korean_text: Annotated[Path | None, typer.Option(help="Text file (one document per line) to check.")] = None,
    english_text: Annotated[Path | None, typer.Option(help="Text file (one document per line) to check.")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Append the new tokens to the base tokenizer (no base id changes) and audit the guarantees."""
    from redwhale.tokenizer.merge import merge_tokenizers

    texts = {}
    for key, path in (("korean", korean_text), ("english", english_text)):
        if path is not None:
            texts[key] = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = merge_tokenizers(
        base, new, out, script, pad_to_multiple_of or None, size, LoadOptions(cache_dir=cache_dir), texts
    )
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))


@tokenizer_app.command("sweep")
@section_options(TokenizerSection, "tokenizer", exclude=("size",))
def sweep(
    out: Annotated[Path, typer.Option("--out", help="Output folder (sweep.json, sweep.md, sweep.png).")],
    tokenizer: TokenizerSection,
    corpus: Corpus = None,
    base: Base = DEFAULT_BASE,
    text_field: TextField = None,
    fmt: Format = None,
    script: Script = "hangul",
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    heldout_fraction: Annotated[float, typer.Option(help="Share of documents held out.")] = 0.05,
    config: Config = None,
    cache_dir: CacheDir = None,
) -> None:
    """Measure RIC and REC for each vocabulary size (one training) and choose the knee."""
    from redwhale.tokenizer.commands import sweep_command

    result = sweep_command(
        base,
        _inputs(corpus, text_field, fmt),
        tokenizer,
        out,
        script,
        seed,
        heldout_fraction,
        LoadOptions(cache_dir=cache_dir),
    )
    typer.echo((out / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"knee: {result['chosen_size']}; wrote {out}/sweep.json, sweep.md, sweep.png")
