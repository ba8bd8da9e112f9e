"""``redwhale eval``: benchmark tasks, bits per byte, tokenizer efficiency and generations in one results file;
``redwhale eval compare``: two results side by side."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.cli.options import section_options
from redwhale.config.schema import EvalSection

eval_app = typer.Typer(
    help="Evaluate a model (benchmarks, bits per byte, tokenizer), and compare results.", invoke_without_command=True
)
app.add_typer(eval_app, name="eval")


@eval_app.callback()
@section_options(EvalSection, "eval")
def evaluate(
    ctx: typer.Context,
    eval: EvalSection,  # noqa: A002 (the section's name in the config)
    model: Annotated[str | None, typer.Option("--model", help="Model folder, Hub id, .gguf file or alias.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Results file (JSON).")] = None,
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
    config: Annotated[Path | None, typer.Option("--config", help="Run config (its eval section).")] = None,
) -> None:
    """Evaluate a model; every figure goes to one results.json."""
    if ctx.invoked_subcommand is not None:
        return
    from redwhale.cli.prepare import corpus_inputs
    from redwhale.core.errors import ConfigError
    from redwhale.core.text import heldout_sample
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.readers import iter_texts
    from redwhale.evaluate.run import evaluate as run_eval
    from redwhale.evaluate.run import flatten
    from redwhale.evaluate.tasks import benchmark_decision
    from redwhale.recipe.checks import check_tasks

    if model is None or out is None:
        raise ConfigError("redwhale eval needs --model and --out (or a subcommand: compare)")
    check_tasks(eval.tasks)
    korean_texts = []
    if korean:
        korean_texts = heldout_sample(
            iter_texts(corpus_inputs(korean, text_field, None)), eval.korean_chars, heldout_only=False
        )
    source = iter_texts(corpus_inputs(english, text_field, None)) if english else python_docs_english(unit="paragraph")
    english_texts = heldout_sample(source, eval.english_chars, heldout_only=False)
    decision = benchmark_decision(eval)
    logging.getLogger("redwhale.eval").info(
        "benchmarks: %s (%s)", "run" if decision["run"] else "skipped", decision["why"]
    )
    results = run_eval(model, out, korean_texts, english_texts, eval, decision["run"], base_tokenizer=base_tokenizer)
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
