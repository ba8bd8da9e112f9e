"""``redwhale tokenizer``: train a new-language tokenizer, sweep vocabulary sizes, merge into a base tokenizer.

Options left out take the run-config schema's defaults (``redwhale config reference``, section ``tokenizer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from redwhale.cli.app import app

tokenizer_app = typer.Typer(help="Train, sweep and merge new-language tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

Base = Annotated[str | None, typer.Option("--base", help="Base model or tokenizer (default: smollm2-135m).")]
Corpus = Annotated[list[str], typer.Option("--corpus", help="Corpus file, folder or glob (repeatable).")]
TextField = Annotated[str | None, typer.Option(help="JSONL/Parquet field holding the text (default: text).")]
Format = Annotated[str | None, typer.Option("--format", help="auto, jsonl, parquet, text or hf (default: auto).")]
Script = Annotated[str | None, typer.Option(help="Writing system of the new language (default: hangul).")]
TrainOn = Annotated[str | None, typer.Option(help="script_words or all_text (default: script_words).")]
CacheDir = Annotated[Path | None, typer.Option(help="GGUF conversion cache.")]


def _section(**options: Any):
    """The ``tokenizer`` config section with the given options over the schema defaults (validated)."""
    from redwhale.config.schema import TokenizerSection
    from redwhale.config.validation import validate

    return validate(TokenizerSection, {k: v for k, v in options.items() if v is not None}, source="options")


def _inputs(corpus: list[str], text_field: str | None, fmt: str | None):
    from redwhale.config.schema import CorpusInput
    from redwhale.config.validation import validate
    from redwhale.errors import ConfigError

    if not corpus:
        raise ConfigError("give at least one --corpus")
    options = {k: v for k, v in {"text_field": text_field, "format": fmt}.items() if v is not None}
    return [validate(CorpusInput, {"path": path, **options}, source="options") for path in corpus]


def _base(base: str | None) -> str:
    from redwhale.config.schema import ModelSection

    return base or ModelSection().base


@tokenizer_app.command("train")
def train(
    out: Annotated[Path, typer.Option("--out", help="Output tokenizer folder.")],
    size: Annotated[int, typer.Option("--size", help="Vocabulary size of the new tokenizer (tokens).")],
    corpus: Corpus = None,
    base: Base = None,
    text_field: TextField = None,
    fmt: Format = None,
    script: Script = None,
    train_on: TrainOn = None,
    min_frequency: Annotated[int | None, typer.Option(help="Minimum pair count (default: 2).")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Train a tokenizer of the base's kind (byte-level BPE or SentencePiece) on a corpus, streamed."""
    from redwhale.tokenizer.commands import train_command

    section = _section(script=script, train_on=train_on, min_frequency=min_frequency, size=size)
    report = train_command(_base(base), _inputs(corpus or [], text_field, fmt), section, out, cache_dir)
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))


@tokenizer_app.command("merge")
def merge(
    new: Annotated[Path, typer.Option("--new", help="Folder of the trained new-language tokenizer.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder of the merged tokenizer.")],
    base: Base = None,
    size: Annotated[int | None, typer.Option(help="Merge only the first SIZE tokens of the new tokenizer.")] = None,
    script: Script = None,
    pad_to_multiple_of: Annotated[
        int | None, typer.Option(help="Pad the vocabulary to a multiple (default 64).")
    ] = None,
    no_pad: Annotated[bool, typer.Option("--no-pad", help="Do not pad the vocabulary.")] = False,
    korean_text: Annotated[Path | None, typer.Option(help="Text file (one document per line) to check.")] = None,
    english_text: Annotated[Path | None, typer.Option(help="Text file (one document per line) to check.")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Append the new tokens to the base tokenizer (no base id changes) and audit the guarantees."""
    from redwhale.tokenizer.merge import merge_tokenizers

    section = _section(script=script, pad_to_multiple_of=pad_to_multiple_of)
    texts = {}
    for key, path in (("korean", korean_text), ("english", english_text)):
        if path is not None:
            texts[key] = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = merge_tokenizers(
        _base(base), new, out, section.script, None if no_pad else section.pad_to_multiple_of, size, cache_dir, texts
    )
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))


@tokenizer_app.command("sweep")
def sweep(
    out: Annotated[Path, typer.Option("--out", help="Output folder (sweep.json, sweep.md, sweep.png).")],
    corpus: Corpus = None,
    base: Base = None,
    sizes: Annotated[str | None, typer.Option(help="Comma-separated sizes (default 8000,12000,...,40000).")] = None,
    text_field: TextField = None,
    fmt: Format = None,
    script: Script = None,
    train_on: TrainOn = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    heldout_fraction: Annotated[float, typer.Option(help="Share of documents held out.")] = 0.05,
    cache_dir: CacheDir = None,
) -> None:
    """Measure RIC and REC for each vocabulary size (one training) and choose the knee."""
    from redwhale.errors import ConfigError
    from redwhale.tokenizer.commands import sweep_command

    try:
        size_list = [int(s) for s in sizes.split(",")] if sizes else None
    except ValueError:
        raise ConfigError(f"--sizes: expected comma-separated integers, got {sizes!r}") from None
    section = _section(script=script, train_on=train_on, sizes=size_list)
    result = sweep_command(
        _base(base), _inputs(corpus or [], text_field, fmt), section, out, seed, heldout_fraction, cache_dir
    )
    typer.echo((out / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"chosen size: {result['chosen_size']}; wrote {out}/sweep.json, sweep.md, sweep.png")
