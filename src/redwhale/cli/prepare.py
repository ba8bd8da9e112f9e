"""``redwhale prepare``: clean a raw Korean corpus with a datatrove pipeline (every drop counted by reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.cli.options import section_options
from redwhale.config.schema import CorpusInput, CorpusSection, PrepareSection
from redwhale.config.validation import validate
from redwhale.core.errors import ConfigError

Corpus = Annotated[
    list[str] | None,
    typer.Option("--corpus", help="Input file, folder, glob or HF dataset (repeatable; default: the config's)."),
]


def corpus_inputs(corpus: list[str] | None, text_field: str | None, fmt: str | None) -> list[CorpusInput]:
    """Corpus inputs from command-line paths and their shared options."""
    options = {k: v for k, v in {"text_field": text_field, "format": fmt}.items() if v is not None}
    return [validate(CorpusInput, {"path": p, **options}, source="options") for p in corpus or []]


@app.command("prepare")
@section_options(PrepareSection, "prepare")
@section_options(CorpusSection, "corpus_section", exclude=("inputs",), key="corpus")
def prepare(
    out: Annotated[Path, typer.Option("--out", help="Work folder: output/{train,heldout}, stats.json, summary.md.")],
    corpus_section: CorpusSection,
    prepare: PrepareSection,
    corpus: Corpus = None,
    config: Annotated[Path | None, typer.Option("--config", help="Run config (prepare and corpus sections).")] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL/Parquet field holding the text.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="auto, jsonl, parquet, text or hf.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
) -> None:
    """Normalise, filter, mask personal data and deduplicate; resumable (finished tasks are skipped)."""
    from redwhale.corpus.pipeline import prepare as run_prepare

    inputs = corpus_inputs(corpus, text_field, fmt) or (corpus_section.inputs if config else [])
    section = corpus_section.model_copy(update={"inputs": inputs})
    if not inputs:
        raise ConfigError("no corpus: give --corpus or corpus.inputs in --config")
    run_prepare(section, prepare, out, seed)
    typer.echo((out / "summary.md").read_text(encoding="utf-8"), nl=False)
