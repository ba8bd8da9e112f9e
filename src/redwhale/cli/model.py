"""``redwhale model``: convert, describe, extend and initialise models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app
from redwhale.cli.options import section_options
from redwhale.config.schema import ExtendSection

model_app = typer.Typer(help="Load, convert, extend, initialise and export models.", no_args_is_help=True)
app.add_typer(model_app, name="model")

CacheDir = Annotated[Path | None, typer.Option(help="GGUF conversion cache.")]
TextField = Annotated[str | None, typer.Option(help="JSONL field holding the text.")]
Config = Annotated[Path | None, typer.Option("--config", help="Run config (its extend section).")]


@model_app.command("convert")
def model_convert(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias (smollm2-135m).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a standard Hugging Face model folder).")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the Hub.")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Write a standard Hugging Face folder (safetensors, config, tokenizer, generation config)."""
    from redwhale.core.source import convert

    path = convert(src, out, revision=revision, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    typer.echo(f"wrote {path}")


@model_app.command("info")
def model_info(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias.")],
    cache_dir: CacheDir = None,
) -> None:
    """Show what a model spec resolves to, its size and its tokenizer."""
    from redwhale.models.info import model_info as info

    for key, value in info(src, cache_dir=cache_dir).items():
        typer.echo(f"{key:>22}: {value}")


def _texts(paths: list[str] | None, text_field: str | None) -> list[str]:
    from redwhale.cli.prepare import corpus_inputs
    from redwhale.corpus.readers import iter_texts

    return list(iter_texts(corpus_inputs(paths, text_field, None)))


def _methods() -> str:
    from redwhale.models.init import METHODS

    return ", ".join(METHODS)


@model_app.command("extend")
@section_options(ExtendSection, "extend", exclude=("compare",))
def model_extend(
    base: Annotated[str, typer.Option("--base", help="Base model (Hub id, folder, .gguf, alias).")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Merged tokenizer folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output model folder.")],
    extend: ExtendSection,
    calibration_corpus: Annotated[
        list[str] | None, typer.Option(help="Training text of the new language (for calibrated; repeatable).")
    ] = None,
    text_field: TextField = None,
    seed: Annotated[int, typer.Option(help="Seed for random init and the calibration sample.")] = 0,
    config: Config = None,
    cache_dir: CacheDir = None,
) -> None:
    """Resize embeddings and LM head to the merged tokenizer and initialise the new rows (--init: random, mean,
    decomposition, weighted, eeve, calibrated)."""
    from redwhale.core.source import LoadOptions
    from redwhale.core.text import training_texts
    from redwhale.models.adapt import extend_and_compare
    from redwhale.recipe.checks import check_init

    check_init(extend.init)
    texts = training_texts(_texts(calibration_corpus, text_field), seed)
    section = extend.model_copy(update={"compare": []})
    summary = extend_and_compare(
        base, tokenizer, section, texts, [], [], out, None, seed, LoadOptions(cache_dir=cache_dir)
    )
    typer.echo(f"wrote {out} (init {extend.init}, {summary['seconds']} s)")


@model_app.command("compare-init")
@section_options(ExtendSection, "extend", exclude=("init",))
def model_compare_init(
    base: Annotated[str, typer.Option("--base", help="Base model.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Merged tokenizer folder.")],
    korean: Annotated[list[str], typer.Option("--korean", help="Korean corpus (its held-out split is scored).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (compare_init.json, .md).")],
    extend: ExtendSection,
    english: Annotated[
        list[str] | None, typer.Option(help="English text files (default: the Python reference shipped with CPython).")
    ] = None,
    text_field: TextField = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and samples.")] = 0,
    config: Config = None,
    cache_dir: CacheDir = None,
) -> None:
    """Extend with each init method and report Korean and English bits per byte before any training."""
    from redwhale.config.schema import COMPARED_METHODS
    from redwhale.core.source import LoadOptions
    from redwhale.core.text import heldout_sample, training_texts
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.models.adapt import extend_and_compare
    from redwhale.recipe.checks import check_init

    if extend.compare == "auto":  # asked for by name: compare every method whatever the budget
        extend = extend.model_copy(update={"compare": list(COMPARED_METHODS)})
    for method in extend.compare:
        check_init(method)
    korean_texts = _texts(korean, text_field)
    english_texts = _texts(english, text_field) if english else python_docs_english(unit="paragraph")
    extend_and_compare(
        base,
        tokenizer,
        extend,
        training_texts(korean_texts, seed),
        heldout_sample(korean_texts, extend.eval_chars, seed),
        heldout_sample(english_texts, extend.eval_chars, seed, heldout_only=False),
        None,
        out,
        seed,
        LoadOptions(cache_dir=cache_dir),
    )
    typer.echo((out / "compare_init.md").read_text(encoding="utf-8"))
