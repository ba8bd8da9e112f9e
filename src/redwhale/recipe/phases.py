"""The phases of a run, each a typed function: the config sections and artifacts it takes -> the artifact it makes.

The runner (:mod:`redwhale.recipe.runner`) reads these signatures and nothing else to know what a phase depends on:

* a parameter typed as a config section is that section of the run config, by name (``model: ModelSection``);
* ``seed: int`` is the run's seed;
* a parameter typed as an artifact (:mod:`redwhale.recipe.artifacts`) is the output of the phase that makes it;
* ``Annotated[T, Derived(fn)]`` is a value computed from the config by ``fn`` (the planned training tokens, whether
  the benchmarks run), hashed like a field;
* ``ctx: PhaseContext`` is the phase's working folder and the run-level settings that change no result.

A phase's hash covers exactly these inputs (plus the content of the input files they name), so a phase can read
nothing the hash does not cover: a test runs a whole run recording every config field read and checks that each
field is read, and only by phases whose hash covers it.

Each phase imports its domain entry point inside its body: those modules import torch, transformers and datatrove
(about 5 s here), and the runner's hashing, ``redwhale status`` and ``--help`` must not wait for them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from redwhale.config.schema import (
    CorpusInput,
    CorpusSection,
    EnglishSection,
    EvalSection,
    ExportSection,
    ExtendSection,
    ModelSection,
    PrepareSection,
    RunConfig,
    TokenizerSection,
    TrainSection,
)
from redwhale.core.errors import DataError
from redwhale.core.progress import PROGRESS_FILE, Progress
from redwhale.core.source import LoadOptions
from redwhale.core.text import heldout_after, heldout_sample, training_texts
from redwhale.evaluate.tasks import benchmark_decision
from redwhale.recipe.artifacts import (
    AdaptedTokenizer,
    Evaluation,
    Exported,
    ExtendedModel,
    PreparedCorpus,
    Report,
    TrainedModel,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Derived:
    """A phase input computed from the config. ``probes``: it asks the machine or the network (``redwhale status``
    does not compute it; the runner computes it once per invocation)."""

    compute: Callable[[RunConfig], Any]
    probes: bool = False


@dataclass(frozen=True)
class PhaseContext:
    """What a phase gets besides its inputs: where it works and run-level settings that change no result."""

    work: Path
    run_name: str
    cache_dir: Path | None

    def progress(self, what: str, total: float | None = None, unit: str = "it", **kwargs: Any) -> Progress:
        """A progress display whose state ``redwhale status`` can read (``<phase>.partial/_progress.json``)."""
        return Progress(what, total, unit, file=self.work / PROGRESS_FILE, **kwargs)

    def load(self, model: ModelSection) -> LoadOptions:
        """How this run loads models (``model.revision``, ``trust_remote_code``, ``dtype``; the GGUF cache)."""
        return LoadOptions(model.revision, model.trust_remote_code, model.dtype, self.cache_dir)


# ----------------------------------------------------------------------------------------------------- text helpers
def read_texts(inputs: list[CorpusInput], text_unit: str = "paragraph") -> Iterator[str]:
    from redwhale.corpus.readers import iter_texts

    return iter_texts(inputs, text_unit=text_unit)


def korean_heldout(prepared: PreparedCorpus, max_chars: int, seed: int) -> list[str]:
    """A fixed sample of the held-out split of the prepared corpus."""
    sample = heldout_sample(read_texts(prepared.split("heldout")), max_chars, seed, heldout_only=False)
    if not sample:
        raise DataError("the held-out split is empty: raise corpus.heldout_fraction or add text")
    return sample


def _forgetting_english(english: EnglishSection) -> tuple[Iterable[str], dict[str, Any], str | None]:
    """Where forgetting is measured: the texts, how :func:`heldout_sample` / :func:`heldout_after` split them, and the
    field that gave them (``None`` for the Python reference): ``english.check_inputs`` whole, else the held-out part
    of ``english.inputs``, else the Python reference."""
    if english.check_inputs:
        return _check_texts(english), {"heldout_only": False}, "english.check_inputs"
    if english.inputs:
        split = {"fraction": english.heldout_fraction, "heldout_only": True}
        return read_texts(english.inputs, english.text_unit), split, "english.inputs"
    from redwhale.corpus.bundled import python_docs_english

    return python_docs_english(unit="paragraph"), {"heldout_only": False}, None


def english_heldout(english: EnglishSection, max_chars: int, seed: int) -> list[str]:
    """English for measuring forgetting: ``english.check_inputs``, else the held-out part of the English inputs, else
    the Python reference."""
    texts, split, _ = _forgetting_english(english)
    return heldout_sample(texts, max_chars, seed, **split)


def english_check(english: EnglishSection, scored_chars: int, chars: int, seed: int) -> list[str]:
    """English for ``train.merge_with_base: auto`` to choose its weight on: the documents of :func:`english_heldout`'s
    source that come after the ``scored_chars`` it gives evaluation (the same shuffled sample, further on), so that the
    text the weight is chosen on is never the text forgetting is reported on. English inputs (or check inputs) whose
    text is all scored leave it to the Python reference (with a warning)."""
    texts, split, field = _forgetting_english(english)
    check = heldout_after(texts, scored_chars, chars, seed, **split)
    if check or field is None:
        return check
    log.warning(
        "train.merge_with_base auto: %s hold no held-out text beyond the %s characters evaluation scores; choosing "
        "the weight on the Python reference's English instead (more English text%s keeps it on yours)",
        field,
        f"{scored_chars:,}",
        ", or a larger english.heldout_fraction," if field == "english.inputs" else "",
    )
    from redwhale.corpus.bundled import python_docs_english

    return heldout_after(python_docs_english(unit="paragraph"), scored_chars, chars, seed, heldout_only=False)


def english_replay(english: EnglishSection, seed: int, held_chars: int = 0) -> Iterator[str] | None:
    """The English texts replayed in training (never those held out to measure forgetting). Without English inputs,
    ``held_chars`` > 0 (:func:`english_held_chars`: a stage asks for replay) replays the Python reference shipped with
    CPython, all but its first ``held_chars`` characters in the shuffled order that the English measuring forgetting
    and ``merge_with_base: auto``'s check text are taken from (:func:`english_heldout`, :func:`english_check`)."""
    checked = set(_check_texts(english))  # english.check_inputs: measure forgetting, never replayed
    if english.inputs:
        replayed = training_texts(read_texts(english.inputs, english.text_unit), seed, english.heldout_fraction)
        return (t for t in replayed if t not in checked) if checked else replayed
    if held_chars <= 0:
        return None
    from redwhale.corpus.bundled import python_docs_english

    docs = list(python_docs_english(unit="paragraph"))
    held = set(heldout_sample(docs, held_chars, seed, heldout_only=False))
    kept = [d for d in docs if d not in held and d not in checked]  # a repeated paragraph goes where one copy went
    log.warning(
        "no english.inputs: stages that replay English (english_share; train.schedule every_layer, which auto takes "
        "when it fits) replay the Python reference shipped with CPython (%d documents, none of those that measure "
        "forgetting).%s",
        len(kept),
        ""
        if english.check_inputs
        else " Forgetting is then measured on the same kind of text they replay, which replay holds best: give "
        "english.check_inputs (English of another kind) to measure it, english.inputs to replay your own",
    )
    return iter(kept)


def _check_texts(english: EnglishSection) -> list[str]:
    """The documents of ``english.check_inputs`` (none when it is not set)."""
    return list(read_texts(english.check_inputs, english.text_unit)) if english.check_inputs else []


# ----------------------------------------------------------------------------------------------------------- derived
def planned_training_tokens(cfg: RunConfig) -> int:
    """Tokens the schedule will train on (the budget the vocabulary size is chosen for)."""
    return sum(cfg.train.stage_tokens())


def english_scored_chars(cfg: RunConfig) -> int:
    """The English characters evaluation scores, which ``merge_with_base: auto`` leaves out of the text it chooses its
    weight on (0 when it does not choose one)."""
    return cfg.eval.english_chars if cfg.train.merge_with_base == "auto" else 0


def english_held_chars(cfg: RunConfig) -> int:
    """The Python reference's characters that measure forgetting and choose ``merge_with_base: auto``'s weight, which
    replay of that reference leaves out (:func:`english_replay`); 0 when the run cannot replay it (English inputs
    given, or no stage and no schedule it may take replays English)."""
    replays_reference = not cfg.english.inputs and cfg.train.replays_english()
    return cfg.eval.english_chars + cfg.train.english_check_chars if replays_reference else 0


def compared_methods(cfg: RunConfig) -> dict[str, Any]:
    """The init methods compared before training, and why (``extend.compare: auto`` depends on the budget)."""
    methods, why = cfg.extend.compared_methods(planned_training_tokens(cfg))
    return {"methods": methods, "why": why}


def resolve_benchmarks(cfg: RunConfig) -> dict[str, Any]:
    """Whether the benchmark tasks run, and why; ``auto`` is decided here, once per run invocation."""
    return benchmark_decision(cfg.eval)


# ------------------------------------------------------------------------------------------------------------ phases
def prepare_phase(ctx: PhaseContext, corpus: CorpusSection, prepare: PrepareSection, seed: int) -> PreparedCorpus:
    """Clean the corpus: normalise, filter, mask personal data, deduplicate, split."""
    from redwhale.corpus.pipeline import prepare as run_pipeline

    summary = run_pipeline(corpus, prepare, ctx.work, seed, progress=ctx.progress)
    return PreparedCorpus(ctx.work, summary["documents_kept"])


def tokenizer_phase(
    ctx: PhaseContext,
    model: ModelSection,
    corpus: CorpusSection,
    tokenizer: TokenizerSection,
    seed: int,
    training_tokens: Annotated[int, Derived(planned_training_tokens)],
    prepared: PreparedCorpus,
) -> AdaptedTokenizer:
    """Sweep the vocabulary sizes (one training at the largest), choose the size, merge."""
    from redwhale.tokenizer.adapt import adapt_tokenizer

    out = AdaptedTokenizer(ctx.work)
    heldout = list(read_texts(prepared.split("heldout")))
    result = adapt_tokenizer(
        model.base,
        read_texts(prepared.split("train")),
        heldout,
        tokenizer,
        corpus.script,
        out.sweep_dir,
        out.merged,
        seed,
        training_tokens,
        ctx.load(model),
        ctx.progress,
    )
    return AdaptedTokenizer(ctx.work, result["chosen_size"], result["added_tokens"])


def extend_phase(
    ctx: PhaseContext,
    model: ModelSection,
    extend: ExtendSection,
    english: EnglishSection,
    seed: int,
    comparison: Annotated[dict[str, Any], Derived(compared_methods)],
    prepared: PreparedCorpus,
    tokenizer: AdaptedTokenizer,
) -> ExtendedModel:
    """Compare init methods (before any training), then save the model extended with the configured one."""
    from redwhale.models.adapt import extend_and_compare

    out = ExtendedModel(ctx.work, extend.init, comparison["why"])
    methods = comparison["methods"]
    extend_and_compare(
        model.base,
        tokenizer.merged,
        extend.model_copy(update={"compare": methods}),
        read_texts(prepared.split("train")),
        korean_heldout(prepared, extend.eval_chars, seed) if methods else [],
        english_heldout(english, extend.eval_chars, seed) if methods else [],
        out.model,
        out.compare_dir,
        seed,
        ctx.load(model),
        ctx.progress,
    )
    return out


def train_phase(
    ctx: PhaseContext,
    model: ModelSection,
    train: TrainSection,
    english: EnglishSection,
    seed: int,
    prepared: PreparedCorpus,
    extended: ExtendedModel,
    english_scored: Annotated[int, Derived(english_scored_chars)],
    english_held: Annotated[int, Derived(english_held_chars)],
) -> TrainedModel:
    """The stages; continues from the newest checkpoint when the phase was interrupted."""
    from redwhale.train.run import train_schedule

    out = TrainedModel(ctx.work)
    check = english_check(english, english_scored, train.english_check_chars, seed) if english_scored else None
    summary = train_schedule(
        extended.model,
        read_texts(prepared.split("train")),
        english_replay(english, seed, english_held),
        train,
        ctx.work,
        seed,
        model.dtype,
        ctx.run_name,
        resume=True,
        trust_remote_code=model.trust_remote_code,
        english_check=check,
    )
    return TrainedModel(out.root, summary["tokens"])


def eval_phase(
    ctx: PhaseContext,
    model: ModelSection,
    eval: EvalSection,  # noqa: A002 (the section's name in the config)
    english: EnglishSection,
    seed: int,
    benchmarks: Annotated[dict, Derived(resolve_benchmarks, probes=True)],
    prepared: PreparedCorpus,
    trained: TrainedModel,
) -> Evaluation:
    """Base and adapted model on the same held-out Korean and English text, the benchmark tasks and the prompts."""
    from redwhale.evaluate.run import evaluate_pair

    out = Evaluation(ctx.work, benchmarks["run"], benchmarks["why"])
    log.info("benchmarks: %s (%s)", "run" if benchmarks["run"] else "skipped", benchmarks["why"])
    evaluate_pair(
        model.base,
        trained.model,
        korean_heldout(prepared, eval.korean_chars, seed),
        english_heldout(english, eval.english_chars, seed),
        eval,
        benchmarks,
        out.base_json,
        out.adapted_json,
        out.compare_md,
        ctx.load(model),
        ctx.progress,
    )
    return out


def export_phase(ctx: PhaseContext, model: ModelSection, export: ExportSection, trained: TrainedModel) -> Exported:
    """GGUF files and the chat vector, when the config asks for them."""
    from redwhale.export.run import export_all

    out = Exported(ctx.work, tuple(export.gguf), export.chat_vector is not None)
    export_all(model.base, trained.model, export, out.root, out.gguf, out.chat_model, out.summary_json, ctx.load(model))
    return out


def report_phase(
    ctx: PhaseContext,
    model: ModelSection,
    prepared: PreparedCorpus,
    tokenizer: AdaptedTokenizer,
    extended: ExtendedModel,
    trained: TrainedModel,
    evaluation: Evaluation,
    exported: Exported,
) -> Report:
    """The HTML report and its Markdown twin."""
    from redwhale.recipe.report import write_report

    write_report(
        ctx.work,
        f"redwhale run {ctx.run_name}: {model.base} → Korean",
        prepared=prepared,
        tokenizer=tokenizer,
        extended=extended,
        trained=trained,
        evaluation=evaluation,
        exported=exported,
    )
    return Report(ctx.work)


#: The phases, in order: (name, function).
PHASES: list[tuple[str, Callable[..., Any]]] = [
    ("prepare", prepare_phase),
    ("tokenizer", tokenizer_phase),
    ("extend", extend_phase),
    ("train", train_phase),
    ("eval", eval_phase),
    ("export", export_phase),
    ("report", report_phase),
]


def progress_of(work: Path) -> dict[str, Any] | None:
    """The last progress a phase's working folder recorded (see :meth:`PhaseContext.progress`)."""
    path = work / PROGRESS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
