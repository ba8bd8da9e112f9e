"""``redwhale eval``: KoBEST, bits per byte and tokenizer efficiency in one results file; ``redwhale eval compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

eval_app = typer.Typer(
    help="Evaluate a model (KoBEST, bits per byte, tokenizer), and compare results.", invoke_without_command=True
)
app.add_typer(eval_app, name="eval")


def _ints(text: str | None, option: str) -> list[int] | None:
    from redwhale.errors import ConfigError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None


@eval_app.callback()
def evaluate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Model folder, Hub id, .gguf file or alias.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Results file (JSON).")] = None,
    kobest_data: Annotated[Path | None, typer.Option(help="Local KoBEST folder (no network).")] = None,
    no_kobest: Annotated[bool, typer.Option("--no-kobest", help="Skip KoBEST.")] = False,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated KoBEST tasks (default: all five).")] = None,
    shots: Annotated[str | None, typer.Option(help="Comma-separated few-shot counts, e.g. 0,5 (default 0).")] = None,
    split: Annotated[str | None, typer.Option(help="test or validation (default test).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N examples per task.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="KoBEST requests per forward pass.")] = None,
    korean: Annotated[list[str] | None, typer.Option("--korean", help="Korean text (files) for bits per byte.")] = None,
    english: Annotated[
        list[str] | None,
        typer.Option(
            "--english", help="English text for bits per byte (default: the Python reference shipped with CPython)."
        ),
    ] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL field holding the text.")] = None,
    base_tokenizer: Annotated[
        str | None, typer.Option(help="Base model or tokenizer for the efficiency ratio.")
    ] = None,
) -> None:
    """Evaluate a model; every figure goes to one results.json."""
    if ctx.invoked_subcommand is not None:
        return
    from redwhale.config.schema import CorpusInput, EvalSection
    from redwhale.config.validation import validate
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.heldout import heldout_sample
    from redwhale.corpus.readers import iter_texts
    from redwhale.errors import ConfigError
    from redwhale.evaluate.run import evaluate as run_eval

    if model is None or out is None:
        raise ConfigError("redwhale eval needs --model and --out (or a subcommand: compare)")
    options = {
        "kobest": not no_kobest,
        "kobest_data": kobest_data,
        "shots": _ints(shots, "--shots"),
        "tasks": tasks.split(",") if tasks else None,
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
    }
    section = validate(EvalSection, {k: v for k, v in options.items() if v is not None}, source="options")
    field = {"text_field": text_field} if text_field else {}
    korean_texts = (
        heldout_sample(
            iter_texts([CorpusInput(path=p, **field) for p in korean]), section.korean_chars, heldout_only=False
        )
        if korean
        else None
    )
    english_texts = heldout_sample(
        iter_texts([CorpusInput(path=p, **field) for p in english])
        if english
        else python_docs_english(unit="paragraph"),
        section.english_chars,
        heldout_only=False,
    )
    results = run_eval(
        model,
        out,
        korean=korean_texts,
        english=english_texts,
        kobest=section.kobest,
        kobest_data=section.kobest_data,
        tasks=section.tasks,
        shots=section.shots,
        split=section.split,
        limit=section.limit,
        batch_size=section.batch_size,
        base_tokenizer=base_tokenizer,
        window=section.window,
    )
    from redwhale.evaluate.run import flatten

    for key, value in flatten(results).items():
        typer.echo(f"{key:>40}: {value:.4f}")
    typer.echo(f"wrote {out} ({results['seconds']} s)")


@eval_app.command("compare")
def compare(
    base: Annotated[Path, typer.Argument(help="Results of the base model.")],
    adapted: Annotated[Path, typer.Argument(help="Results of the adapted model.")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write the table here (Markdown).")] = None,
) -> None:
    """Side-by-side table of two results files, with the change per metric."""
    from redwhale.evaluate.run import compare_files

    typer.echo(compare_files(base, adapted, out), nl=False)
