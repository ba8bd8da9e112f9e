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


def _gib(text: str) -> float:
    from redwhale.errors import ConfigError

    value = text.strip().lower().replace(" ", "")
    for suffix, scale in (("gib", 1.0), ("gb", 1e9 / 2**30), ("g", 1.0)):
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        return float(value) * factor
    except ValueError:
        raise ConfigError(f"--gpu-memory: expected a size such as 80GB or 80GiB, got {text!r}") from None


@train_app.command("plan")
def plan(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Preset (llama-3.1-8b, solar-10.7b, qwen2.5-7b, llama-3.2-1b, smollm2-135m) or any model spec.",
        ),
    ],
    gpu_memory: Annotated[
        str, typer.Option("--gpu-memory", help="Memory of one GPU, e.g. 80GB (1e9 bytes) or 80GiB.")
    ] = "80GB",
    new_tokens: Annotated[int, typer.Option(help="Tokens added to the vocabulary.")] = 20000,
    config: Annotated[Path | None, typer.Option("--config", help="Run config (its train section).")] = None,
    sequence_length: Annotated[int | None, typer.Option(help="Override train.sequence_length.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="Override train.micro_batch_size.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Override train.optimizer (adamw, adamw8bit).")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing", help="Override train.gradient_checkpointing."
        ),
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Plan an fp32 run on CPU instead of bf16 on a GPU.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the plan as JSON here.")] = None,
) -> None:
    """Estimate each stage's peak memory (weights, gradients, optimizer, activations) and the micro-batch that fits."""
    from redwhale.config import RunConfig, load_config
    from redwhale.config.schema import TrainSection
    from redwhale.config.validation import validate
    from redwhale.rundir import atomic_write_json
    from redwhale.train.plan import plan as make_plan
    from redwhale.train.plan import plan_markdown

    base = (load_config(config) if config else RunConfig()).train.model_dump()
    overrides = {
        "sequence_length": sequence_length,
        "micro_batch_size": micro_batch_size,
        "optimizer": optimizer,
        "gradient_checkpointing": gradient_checkpointing,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    cfg = validate(TrainSection, base, source="options")
    result = make_plan(model, cfg, _gib(gpu_memory), new_tokens, on_gpu=not cpu)
    if json_out:
        atomic_write_json(json_out, result)
    typer.echo(plan_markdown(result), nl=False)
