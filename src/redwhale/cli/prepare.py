"""``redwhale prepare``: clean a raw Korean corpus with a datatrove pipeline (every drop counted by reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app


@app.command("prepare")
def prepare(
    out: Annotated[Path, typer.Option("--out", help="Work folder: output/{train,heldout}, stats.json, summary.md.")],
    corpus: Annotated[
        list[str] | None,
        typer.Option("--corpus", help="Input file, folder, glob or HF dataset (repeatable; default: the config's)."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Run config (prepare and corpus sections).")] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL/Parquet field holding the text.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="auto, jsonl, parquet, text or hf.")] = None,
    tasks: Annotated[int | None, typer.Option(help="datatrove tasks (default 4).")] = None,
    workers: Annotated[int | None, typer.Option(help="Local processes (default 2).")] = None,
    keep_dropped: Annotated[bool, typer.Option("--keep-dropped", help="Write dropped documents to dropped/.")] = False,
) -> None:
    """Normalise, filter, mask personal data and deduplicate; resumable (finished tasks are skipped)."""
    from redwhale.config import RunConfig, load_config
    from redwhale.config.schema import CorpusInput, PrepareSection
    from redwhale.config.validation import validate
    from redwhale.corpus.pipeline import prepare as run_prepare
    from redwhale.errors import ConfigError

    cfg = load_config(config) if config else RunConfig()
    overrides = {"tasks": tasks, "workers": workers, **({"keep_dropped": True} if keep_dropped else {})}
    section = validate(
        PrepareSection,
        {**cfg.prepare.model_dump(), **{k: v for k, v in overrides.items() if v is not None}},
        source="options",
    )
    options = {k: v for k, v in {"text_field": text_field, "format": fmt}.items() if v is not None}
    inputs = (
        [validate(CorpusInput, {"path": p, **options}, source="options") for p in corpus]
        if corpus
        else cfg.corpus.inputs
    )
    if not inputs:
        raise ConfigError("no corpus: give --corpus or corpus.inputs in the config")
    run_prepare(inputs, section, out, cfg.seed, cfg.corpus.heldout_fraction, cfg.corpus.text_unit, cfg.tokenizer.script)
    typer.echo((out / "summary.md").read_text(encoding="utf-8"), nl=False)
