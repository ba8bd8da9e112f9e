"""``redwhale prepare``: the corpus pipeline, built from datatrove steps and run by a datatrove executor.

Stages, each an executor run (local processes, Slurm or Ray, chosen in the config):

1. ``filter``: read -> normalise -> script filter -> quality filter -> [perplexity filter] -> PII masking -> write
   the survivors (one file per task) -> exact and MinHash signatures;
2. duplicates: datatrove's ``exact`` finder; ``candidates``, the MinHash LSH candidate pairs (documents sharing a
   band signature) confirmed by their exact character n-gram Jaccard similarity (``prepare.dedup_threshold``); and
   datatrove's MinHash ``clusters`` over the confirmed pairs only;
3. ``dedup``: read each task's survivors back -> drop duplicates -> tag the deterministic train / held-out split ->
   write the cleaned shards (``output/train``, ``output/heldout``).

Every dropped document has a reason, counted in ``stats.json`` (and written to ``dropped/`` with ``keep_dropped``).
Malformed input lines are counted, never fatal. A run stops after the filter stage, with the counts, when no document
survived it. An interrupted run resumes: datatrove skips the tasks that completed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from datatrove.pipeline.dedup.exact_dedup import ExactFindDedups
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupCluster
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.hashing import HashConfig

from redwhale.config.schema import CorpusInput, CorpusSection, PrepareSection
from redwhale.core.errors import ConfigError, DataError
from redwhale.core.io import atomic_write_json, atomic_write_text
from redwhale.core.progress import ProgressFactory, no_file_progress
from redwhale.corpus.dedup import DedupFilter, DedupSignatures, FindNearDuplicates, RankFileReader, exact_config
from redwhale.corpus.executors import StageProgress, make_executor
from redwhale.corpus.filters import KoreanQualityFilter, ScriptFilter
from redwhale.corpus.normalize import KoreanNormalizer
from redwhale.corpus.pii import PIIMasker
from redwhale.corpus.readers import check_inputs, make_reader
from redwhale.corpus.stats import read_stats, summarize, summary_markdown
from redwhale.corpus.steps import TagSplit, Tally

log = logging.getLogger(__name__)


def _writer(folder: Path, fmt: str, filename: str):
    if fmt == "parquet":
        return ParquetWriter(str(folder), output_filename=filename.replace(".jsonl.gz", ".parquet"))
    return JsonlWriter(str(folder), output_filename=filename, compression="gzip")


def minhash_config(cfg: PrepareSection) -> MinhashConfig:
    return MinhashConfig(
        hash_config=HashConfig(precision=64),
        num_buckets=cfg.minhash_bands,
        hashes_per_bucket=cfg.minhash_rows,
        n_grams=cfg.minhash_ngram,
    )


def _quality(cfg: PrepareSection, exclusion) -> KoreanQualityFilter:
    return KoreanQualityFilter(
        min_chars=cfg.min_chars,
        max_chars=cfg.max_chars,
        max_symbol_share=cfg.max_symbol_share,
        max_digit_share=cfg.max_digit_share,
        max_duplicate_lines=cfg.max_duplicate_lines,
        max_duplicate_line_chars=cfg.max_duplicate_line_chars,
        max_duplicate_paragraphs=cfg.max_duplicate_paragraphs,
        max_duplicate_ngram_chars=cfg.max_duplicate_ngram_chars,
        max_char_run_share=cfg.max_char_run_share,
        max_replacement_share=cfg.max_replacement_share,
        min_sentence_lines=cfg.min_sentence_lines,
        exclusion_writer=exclusion,
    )


def filter_steps(corpus: CorpusSection, cfg: PrepareSection, work: Path, exclusion) -> list:
    """Stage 1: read, normalise, filter, mask, write the survivors and their dedup signatures."""
    steps: list = [make_reader(spec, None, corpus.text_unit) for spec in corpus.inputs]
    steps.append(Tally("read", work / "progress" / "1-filter"))
    if cfg.normalize:
        steps.append(
            KoreanNormalizer(cfg.fix_mojibake, cfg.strip_html, cfg.remove_boilerplate, cfg.remove_template_lines)
        )
    if cfg.script_filter:
        lid = str(cfg.lid_model) if cfg.lid_model else None
        steps.append(
            ScriptFilter(
                corpus.script, cfg.min_script_share, lid, cfg.lid_min_score, exclusion_writer=exclusion("script")
            )
        )
    if cfg.quality_filter:
        steps.append(_quality(cfg, exclusion("quality")))
    if cfg.perplexity_model:
        # its own module: it imports torch, which the workers should load only when the filter is used
        from redwhale.corpus.perplexity import PerplexityFilter

        steps.append(PerplexityFilter(cfg.perplexity_model, cfg.max_bits_per_byte, exclusion("perplexity")))
    if cfg.mask_pii:
        steps.append(PIIMasker())
    # the survivors are read once more by stage 3 and deleted with the work folder: not worth compressing
    survivors = JsonlWriter(str(work / "survivors"), output_filename="${rank}.jsonl", compression=None)
    steps += [Tally("kept", work / "progress" / "1-filter"), survivors]
    if cfg.dedup_exact or cfg.dedup_near:
        exact = str(work / "signatures" / "exact") if cfg.dedup_exact else None
        shingles = str(work / "signatures" / "shingles") if cfg.dedup_near else None
        steps.append(
            DedupSignatures(
                str(work / "signatures" / "minhash"), exact, minhash_config(cfg), cfg.minhash_ngram, shingles
            )
        )
    return steps


def dedup_stages(cfg: PrepareSection, work: Path) -> list[tuple[str, list, int]]:
    """Stage 2: datatrove's duplicate finders, with the confirmation of MinHash candidates in between."""
    minhash = minhash_config(cfg)
    stages: list[tuple[str, list, int]] = []
    if cfg.dedup_exact:
        stages.append(
            ("exact", [ExactFindDedups(str(work / "signatures" / "exact"), str(work / "exact"), exact_config())], 1)
        )
    if cfg.dedup_near:
        signatures, shingles = str(work / "signatures" / "minhash"), str(work / "signatures" / "shingles")
        find = FindNearDuplicates(signatures, shingles, str(work / "confirmed"), minhash, cfg.dedup_threshold)
        stages += [
            ("candidates", [find], min(cfg.workers, cfg.minhash_bands)),
            ("clusters", [MinhashDedupCluster(str(work / "confirmed"), str(work / "clusters"), config=minhash)], 1),
        ]
    return stages


def final_steps(cfg: PrepareSection, work: Path, seed: int, heldout_fraction: float, exclusion) -> list:
    """Stage 3: drop the duplicates, tag the split, write the cleaned shards."""
    steps: list = [RankFileReader(str(work / "survivors"))]
    if cfg.dedup_exact or cfg.dedup_near:
        exact = str(work / "exact") if cfg.dedup_exact else None
        steps.append(DedupFilter(exact, str(work / "clusters") if cfg.dedup_near else None, exclusion("duplicates")))
    return steps + [
        TagSplit(seed, heldout_fraction),
        _writer(work / "output", cfg.output_format, "${split}/${rank}.jsonl.gz"),
    ]


def build_stages(corpus: CorpusSection, cfg: PrepareSection, work: Path, seed: int, verbose: bool = False):
    """``[(name, executor)]`` of every stage, in order; each executor ``depends`` on the one before."""
    if not corpus.inputs:
        raise ConfigError("corpus.inputs: no input to prepare")

    def exclusion(reason: str):
        return _writer(work / "dropped" / reason, "jsonl", "${rank}.jsonl.gz") if cfg.keep_dropped else None

    stages = [("filter", filter_steps(corpus, cfg, work, exclusion), cfg.tasks)]
    stages += dedup_stages(cfg, work)
    stages.append(("dedup", final_steps(cfg, work, seed, corpus.heldout_fraction, exclusion), cfg.tasks))
    executors: list[tuple[str, Any]] = []
    for index, (name, steps, tasks) in enumerate(stages, start=1):
        depends = executors[-1][1] if executors else None
        logs = work / "logs" / f"{index}-{name}"
        executors.append((name, make_executor(cfg, steps, tasks, logs, f"redwhale-{name}", verbose, depends)))
    return executors


def _stop_if_nothing_survived(summary: dict[str, Any], inputs: list[CorpusInput]) -> None:
    if summary["documents_in"] == 0:
        names = ", ".join(i.path for i in inputs)
        raise DataError(f"no document in the input ({names}): {summary['malformed_lines']:,} malformed lines")
    if summary["after_filters"] == 0:
        reasons = ", ".join(f"{n:,} {r.replace('_', ' ')}" for r, n in summary["dropped_by_reason"].items())
        raise DataError(f"no document survived the filters: {summary['documents_in']:,} read, dropped: {reasons}")


def prepare(
    corpus: CorpusSection,
    cfg: PrepareSection,
    work: Path,
    seed: int = 0,
    progress: ProgressFactory = no_file_progress,
) -> dict[str, Any]:
    """Run (or resume) the pipeline in ``work``; write ``stats.json`` and ``summary.md``; return the summary."""
    started = time.perf_counter()
    check_inputs(corpus.inputs)
    work.mkdir(parents=True, exist_ok=True)
    verbose = logging.getLogger("redwhale").isEnabledFor(logging.DEBUG)
    stages = build_stages(corpus, cfg, work, seed, verbose)
    chained = cfg.executor == "slurm"  # Slurm jobs are submitted together, chained by dependencies
    for index, (name, executor) in enumerate(stages):
        folder = f"{index + 1}-{name}"
        with StageProgress(executor, work / "logs" / folder, work / "progress" / folder, name, progress) as watch:
            if not chained:
                executor.depends = None  # stage by stage here, so that an empty first stage stops the rest
                executor.run()
            else:
                if index == 0:
                    stages[-1][1].run()  # submits every stage, chained by dependencies
                watch.wait()
        if index == 0:
            _stop_if_nothing_survived(summarize(read_stats(work / "logs")), corpus.inputs)
    summary = summarize(read_stats(work / "logs"))
    if summary["documents_kept"] == 0:
        raise DataError(f"no document survived preparation ({summary['dropped_by_reason']})")
    seconds = time.perf_counter() - started
    atomic_write_json(
        work / "stats.json",
        {
            "summary": summary,
            "stages": read_stats(work / "logs"),
            "seconds": round(seconds, 2),
            "config": cfg.model_dump(mode="json"),
        },
    )
    atomic_write_text(work / "summary.md", summary_markdown(summary, seconds))
    return summary
