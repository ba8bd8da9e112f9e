"""``redwhale train``: the multistage continual-pretraining schedule, and ``redwhale train plan``: its memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

train_app = typer.Typer(help="Multistage continual pretraining, and its memory plan.", invoke_without_command=True)
app.add_typer(train_app, name="train")


@train_app.callback()
def train(
    ctx: typer.Context,
    model: Annotated[
        Path | None, typer.Option("--model", help="Extended model folder (redwhale model extend).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Work folder: data, checkpoints, logs, model/.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Run config (its train and corpus sections).")] = None,
    corpus: Annotated[list[str] | None, typer.Option("--corpus", help="Korean corpus (default: the config's).")] = None,
    english: Annotated[list[str] | None, typer.Option("--english", help="English replay text (repeatable).")] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL field holding the text.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
) -> None:
    """Train the extended model stage by stage (resumable with --resume)."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from redwhale.config import RunConfig, load_config
    from redwhale.config.schema import CorpusInput
    from redwhale.corpus.heldout import training_texts
    from redwhale.corpus.readers import iter_texts
    from redwhale.errors import ConfigError
    from redwhale.train.commands import train_command

    if model is None or out is None:
        raise ConfigError("redwhale train needs --model and --out (or a subcommand: plan)")
    cfg = load_config(config) if config else RunConfig()
    options = {"text_field": text_field} if text_field else {}
    korean_inputs = [CorpusInput(path=p, **options) for p in corpus] if corpus else cfg.corpus.inputs
    english_inputs = [CorpusInput(path=p, **options) for p in english] if english else cfg.corpus.english
    if not korean_inputs:
        raise ConfigError("no training corpus: give --corpus or corpus.inputs in the config")
    korean = training_texts(iter_texts(korean_inputs), cfg.seed, cfg.corpus.heldout_fraction)
    english_texts = iter_texts(english_inputs) if english_inputs else None
    summary = train_command(model, korean, english_texts, cfg.train, out, cfg.seed, resume, cfg.name)
    typer.echo(json.dumps(summary["stages"], indent=2))
    typer.echo(f"model: {out / 'model'}")
