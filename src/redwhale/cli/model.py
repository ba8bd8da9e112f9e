"""``redwhale model``: convert, describe, extend and initialise models; and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redwhale.cli.app import app

model_app = typer.Typer(help="Load, convert, extend and initialise models.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("convert")
def model_convert(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias (smollm2-135m).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a standard Hugging Face model folder).")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the Hub.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Write a standard Hugging Face folder (safetensors, config, tokenizer, generation config)."""
    from redwhale.models.source import convert

    path = convert(src, out, revision=revision, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    typer.echo(f"wrote {path}")


@model_app.command("info")
def model_info(
    src: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or alias.")],
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Show what a model spec resolves to, its size and its tokenizer."""
    from redwhale.models.info import model_info as info

    for key, value in info(src, cache_dir=cache_dir).items():
        typer.echo(f"{key:>22}: {value}")


@app.command("demo")
def demo(
    run_dir: Annotated[Path | None, typer.Option(help="Where runs go (default: the config's, runs/).")] = None,
) -> None:
    """Adapt the embedded SmolLM2 to Korean with konlpy's text: configs/demo.yaml, every phase, with a report."""
    from redwhale.cli.run import print_result
    from redwhale.demo import run_demo

    print_result(run_demo(run_dir))


def _texts(paths: list[str] | None, text_field: str | None) -> list[str]:
    from redwhale.config.schema import CorpusInput
    from redwhale.corpus.readers import iter_texts

    options = {"text_field": text_field} if text_field else {}
    return list(iter_texts([CorpusInput(path=p, **options) for p in paths or []]))


@model_app.command("extend")
def model_extend(
    base: Annotated[str, typer.Option("--base", help="Base model (Hub id, folder, .gguf, alias).")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Merged tokenizer folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output model folder.")],
    init: Annotated[
        str | None,
        typer.Option("--init", help="random, mean, decomposition, weighted, eeve or calibrated (default: calibrated)."),
    ] = None,
    calibration_corpus: Annotated[
        list[str] | None, typer.Option(help="Training text of the new language (for calibrated; repeatable).")
    ] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL field holding the text.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for random init and the calibration sample.")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Resize embeddings and LM head to the merged tokenizer and initialise the new rows."""
    from redwhale.config.schema import ExtendSection
    from redwhale.config.validation import validate
    from redwhale.corpus.heldout import training_texts
    from redwhale.models.extend import extend_command

    section = validate(ExtendSection, {"init": init} if init else {}, source="options")
    texts = training_texts(_texts(calibration_corpus, text_field), seed)
    report = extend_command(
        base, tokenizer, section.init, out, texts, section.calibration_chars, seed, cache_dir=cache_dir
    )
    typer.echo(f"wrote {out} ({report['merged_vocab']:,} tokens, init {section.init}, {report['seconds']} s)")


@model_app.command("compare-init")
def model_compare_init(
    base: Annotated[str, typer.Option("--base", help="Base model.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Merged tokenizer folder.")],
    korean: Annotated[list[str], typer.Option("--korean", help="Korean corpus (its held-out split is scored).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (compare_init.json, .md).")],
    english: Annotated[
        list[str] | None, typer.Option(help="English text files (default: the Python reference shipped with CPython).")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated methods (default from the schema).")] = None,
    text_field: Annotated[str | None, typer.Option(help="JSONL field holding the text.")] = None,
    eval_chars: Annotated[int | None, typer.Option(help="Held-out characters per language.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and samples.")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="GGUF conversion cache.")] = None,
) -> None:
    """Extend with each init method and report Korean and English bits per byte before any training."""
    from redwhale.config.schema import ExtendSection
    from redwhale.config.validation import validate
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.heldout import heldout_sample, training_texts
    from redwhale.models.compare import compare_init

    options: dict = {}
    if methods:
        options["compare"] = [m.strip() for m in methods.split(",") if m.strip()]
    if eval_chars:
        options["eval_chars"] = eval_chars
    section = validate(ExtendSection, options, source="options")
    korean_texts = _texts(korean, text_field)
    english_texts = _texts(english, text_field) if english else python_docs_english(unit="paragraph")
    result = compare_init(
        base,
        tokenizer,
        section.compare,
        heldout_sample(korean_texts, section.eval_chars, seed),
        heldout_sample(english_texts, section.eval_chars, seed, heldout_only=False),
        out,
        training_texts(korean_texts, seed),
        section.calibration_chars,
        seed,
        cache_dir=cache_dir,
    )
    typer.echo((out / "compare_init.md").read_text(encoding="utf-8"))
    typer.echo(f"({result['seconds']} s)")
