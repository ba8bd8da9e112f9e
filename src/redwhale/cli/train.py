"""``redwhale train``: the multistage continual-pretraining schedule, and ``redwhale train plan``: its memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.cli.options import section_options
from redwhale.config.schema import TokenizerSection, TrainSection

train_app = typer.Typer(help="Multistage continual pretraining, and its memory plan.", invoke_without_command=True)
app.add_typer(train_app, name="train")


@train_app.callback()
@section_options(TrainSection, "train")
def train(
    ctx: typer.Context,
    train: TrainSection,
    model: Annotated[
        Path | None, typer.Option("--model", help="Extended model folder (redwhale model extend).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Work folder: data, checkpoints, logs, model/.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Run config (its train, model, english and corpus sections).")
    ] = None,
    corpus: Annotated[list[str] | None, typer.Option("--corpus", help="Korean corpus (default: the config's).")] = None,
    english: Annotated[list[str] | None, typer.Option("--english", help="English replay text (repeatable).")] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL field holding the text.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
) -> None:
    """Train the extended model stage by stage (resumable with --resume). The training split of the corpus (by the
    config's seed and held-out fraction) is tokenised once into --out/data; a rerun reuses it."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from redwhale.cli.prepare import corpus_inputs
    from redwhale.config import RunConfig, load_config
    from redwhale.core.errors import ConfigError
    from redwhale.core.text import training_texts
    from redwhale.corpus.readers import iter_texts
    from redwhale.recipe.phases import english_check, english_held_chars, english_replay
    from redwhale.train.run import train_schedule

    if model is None or out is None:
        raise ConfigError("redwhale train needs --model and --out (or a subcommand: plan)")
    cfg = load_config(config) if config else RunConfig()
    korean_inputs = corpus_inputs(corpus, text_field, None) or cfg.corpus.inputs
    english_section = (
        cfg.english.model_copy(update={"inputs": corpus_inputs(english, text_field, None)}) if english else cfg.english
    )
    korean = training_texts(iter_texts(korean_inputs), cfg.seed, cfg.corpus.heldout_fraction) if korean_inputs else None
    ran = cfg.model_copy(update={"train": train, "english": english_section})  # what this command runs
    summary = train_schedule(
        model,
        korean,
        english_replay(english_section, cfg.seed, english_held_chars(ran)),
        train,
        out,
        cfg.seed,
        cfg.model.dtype,
        cfg.name,
        resume,
        cfg.model.trust_remote_code,
        english_check(english_section, cfg.eval.english_chars, train.english_check_chars, cfg.seed)
        if train.merge_with_base == "auto"
        else None,
    )
    typer.echo(json.dumps(summary["stages"], indent=2))
    typer.echo(f"model: {out / 'model'}")


def _gib(text: str) -> float:
    from redwhale.core.errors import ConfigError

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
@section_options(TrainSection, "train")
def plan(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Preset (llama-3.1-8b, solar-10.7b, qwen2.5-7b, llama-3.2-1b, smollm2-135m) or any model spec.",
        ),
    ],
    train: TrainSection,
    gpu_memory: Annotated[
        str, typer.Option("--gpu-memory", help="Memory of one GPU, e.g. 80GB (1e9 bytes) or 80GiB.")
    ] = "80GB",
    new_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens added to the vocabulary; default: the most the tokenizer section (of --config, else the "
            "defaults) can add, 80,000 with size auto."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Run config (its train section).")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Plan an fp32 run on CPU instead of bf16 on a GPU.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the plan as JSON here.")] = None,
) -> None:
    """Estimate each stage's peak memory (weights, gradients, optimizer, activations) and the micro-batch that fits."""
    from redwhale.core.io import atomic_write_json
    from redwhale.train.plan import plan as make_plan
    from redwhale.train.plan import plan_markdown

    if new_tokens is None:
        from redwhale.config import load_config

        new_tokens = (load_config(config).tokenizer if config else TokenizerSection()).largest_size()
    result = make_plan(model, train, _gib(gpu_memory), new_tokens, on_gpu=not cpu)
    if json_out:
        atomic_write_json(json_out, result)
    typer.echo(plan_markdown(result), nl=False)
