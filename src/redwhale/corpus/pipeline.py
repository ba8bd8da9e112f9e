"""``redwhale prepare``: the corpus pipeline, built from datatrove steps and run by a datatrove executor.

Three stages, each an executor run (local processes, Slurm or Ray, chosen in the config):

1. read -> normalise -> script filter -> quality filter -> [perplexity filter] -> PII masking -> write the survivors
   (one file per task) -> exact and MinHash signatures;
2. datatrove's own finders: exact duplicates, MinHash buckets, MinHash clusters;
3. read each task's survivors back -> drop duplicates -> tag the deterministic train / held-out split -> write the
   cleaned shards (``output/train``, ``output/heldout``).

Every dropped document has a reason, counted in ``stats.json`` (and written to ``dropped/`` with ``keep_dropped``).
Malformed input lines are counted, never fatal. An interrupted run resumes: datatrove skips the tasks that completed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from redwhale.config.schema import CorpusInput, PrepareSection
from redwhale.errors import ConfigError, DataError
from redwhale.rundir import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def _split_step(seed: int, fraction: float):
    from datatrove.pipeline.base import PipelineStep

    from redwhale.corpus.split import split_of

    class TagSplit(PipelineStep):
        """Tags each document ``train`` or ``heldout`` by a hash of its text (see :mod:`redwhale.corpus.split`)."""

        type = "🔀 - SPLIT"
        name = "🔀 train / held-out"

        def run(self, data, rank: int = 0, world_size: int = 1):
            for document in data:
                split = split_of(document.text, seed, fraction)
                document.metadata["split"] = split
                self.stat_update(split)
                yield document

    return TagSplit()


def _perplexity_step(spec: str, max_bpb: float, exclusion_writer):
    from datatrove.pipeline.filters.base_filter import BaseFilter

    class PerplexityFilter(BaseFilter):
        """Drops documents the reference model finds too surprising (bits per byte above the threshold)."""

        name = "📉 perplexity"

        def __init__(self):
            super().__init__(exclusion_writer, batch_size=16)
            self._model = None

        def filter_batch(self, batch):
            from redwhale.evaluate.bpb import bits_per_byte
            from redwhale.models.source import load_model, load_tokenizer

            if self._model is None:
                self._model = (load_model(spec, dtype="float32"), load_tokenizer(spec))
            model, tokenizer = self._model
            results = []
            for doc in batch:
                score = bits_per_byte(model, tokenizer, [doc.text], window=512, stride=256).bits_per_byte
                doc.metadata["reference_bpb"] = round(score, 3)
                results.append(True if score <= max_bpb else (False, "perplexity"))
            return results

    return PerplexityFilter()


def _reader(spec: CorpusInput, text_unit: str):
    from redwhale.corpus.readers import make_reader

    return make_reader(spec, None, text_unit)


def _writer(folder: Path, fmt: str, filename: str):
    from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

    if fmt == "parquet":
        return ParquetWriter(str(folder), output_filename=filename.replace(".jsonl.gz", ".parquet"))
    return JsonlWriter(str(folder), output_filename=filename, compression="gzip")


def _executor(cfg: PrepareSection, pipeline: list, tasks: int, logs: Path, name: str, depends=None):
    if cfg.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(cfg.workers, tasks), logging_dir=str(logs), depends=depends
        )
    options = dict(cfg.executor_options)
    if cfg.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline=pipeline, tasks=tasks, logging_dir=str(logs), job_name=name, depends=depends, **options
        )
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=str(logs), depends=depends, **options)


def build_stages(
    inputs: list[CorpusInput],
    cfg: PrepareSection,
    work: Path,
    seed: int,
    heldout_fraction: float,
    text_unit: str = "paragraph",
    script: str = "hangul",
) -> list:
    """The executors of the three stages, chained by ``depends`` (the last one runs the others first)."""
    from datatrove.pipeline.dedup.exact_dedup import ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.utils.hashing import HashConfig

    from redwhale.corpus.dedup import DedupFilter, DedupSignatures, RankFileReader, exact_config
    from redwhale.corpus.filters import KoreanQualityFilter, ScriptFilter
    from redwhale.corpus.normalize import KoreanNormalizer
    from redwhale.corpus.pii import PIIMasker

    if not inputs:
        raise ConfigError("corpus.inputs: no input to prepare")
    dropped = work / "dropped"

    def exclusion(reason: str):
        return _writer(dropped / reason, "jsonl", "${rank}.jsonl.gz") if cfg.keep_dropped else None

    minhash = MinhashConfig(
        hash_config=HashConfig(precision=64),
        num_buckets=cfg.minhash_bands,
        hashes_per_bucket=cfg.minhash_rows,
        n_grams=cfg.minhash_ngram,
    )
    stage1: list = [_reader(spec, text_unit) for spec in inputs]
    if cfg.normalize:
        stage1.append(KoreanNormalizer(cfg.fix_mojibake, cfg.strip_html, cfg.remove_boilerplate))
    if cfg.script_filter:
        stage1.append(
            ScriptFilter(
                script,
                cfg.min_script_share,
                str(cfg.lid_model) if cfg.lid_model else None,
                lid_min_score=cfg.lid_min_score,
                exclusion_writer=exclusion("script"),
            )
        )
    if cfg.quality_filter:
        stage1.append(
            KoreanQualityFilter(
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
                exclusion_writer=exclusion("quality"),
            )
        )
    if cfg.perplexity_model:
        stage1.append(_perplexity_step(cfg.perplexity_model, cfg.max_bits_per_byte, exclusion("perplexity")))
    if cfg.mask_pii:
        stage1.append(PIIMasker())
    stage1.append(_writer(work / "survivors", "jsonl", "${rank}.jsonl.gz"))
    dedup = cfg.dedup_exact or cfg.dedup_near
    if dedup:
        stage1.append(
            DedupSignatures(
                str(work / "signatures" / "minhash"),
                str(work / "signatures" / "exact") if cfg.dedup_exact else None,
                minhash,
                cfg.minhash_ngram,
            )
        )
    logs = work / "logs"
    executors = [_executor(cfg, stage1, cfg.tasks, logs / "1-filter", "redwhale-filter")]
    if cfg.dedup_exact:
        executors.append(
            _executor(
                cfg,
                [ExactFindDedups(str(work / "signatures" / "exact"), str(work / "exact"), exact_config())],
                1,
                logs / "2-exact",
                "redwhale-exact",
                executors[-1],
            )
        )
    if cfg.dedup_near:
        executors.append(
            _executor(
                cfg,
                [MinhashDedupBuckets(str(work / "signatures" / "minhash"), str(work / "buckets"), config=minhash)],
                cfg.minhash_bands,
                logs / "2-buckets",
                "redwhale-buckets",
                executors[-1],
            )
        )
        executors.append(
            _executor(
                cfg,
                [MinhashDedupCluster(str(work / "buckets"), str(work / "clusters"), config=minhash)],
                1,
                logs / "2-clusters",
                "redwhale-clusters",
                executors[-1],
            )
        )
    stage3: list = [RankFileReader(str(work / "survivors"))]
    if dedup:
        stage3.append(
            DedupFilter(
                str(work / "exact") if cfg.dedup_exact else None,
                str(work / "clusters") if cfg.dedup_near else None,
                exclusion("duplicates"),
            )
        )
    stage3 += [
        _split_step(seed, heldout_fraction),
        _writer(work / "output", cfg.output_format, "${split}/${rank}.jsonl.gz"),
    ]
    executors.append(_executor(cfg, stage3, cfg.tasks, logs / "3-dedup", "redwhale-dedup", executors[-1]))
    return executors


def read_stats(logs: Path) -> dict[str, Any]:
    """datatrove's merged stats of every stage, as ``{stage: {step: {counter: value}}}``."""
    out: dict[str, Any] = {}
    for stage in sorted(p for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []:
        path = stage / "stats.json"
        if not path.is_file():
            continue
        steps = {}
        for entry in json.loads(path.read_text()):
            counters = {}
            for key, value in entry.get("stats", {}).items():
                counters[key] = value.get("total", value) if isinstance(value, dict) else value
            steps[entry["name"]] = counters
        out[stage.name] = steps
    return out


NORMALISATION_COUNTERS = (
    "mojibake_fixed",
    "html_cleaned",
    "controls_removed",
    "stray_jamo_mapped",
    "boilerplate_lines_removed",
)


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """Documents in and out, drops by reason, PII counts, split sizes, malformed input (from :func:`read_stats`)."""
    summary: dict[str, Any] = {
        "documents_in": 0,
        "documents_kept": 0,
        "dropped_by_reason": {},
        "dropped_total": 0,
        "malformed_lines": 0,
        "malformed_by_reason": {},
        "pii_masked": {},
        "normalisation": {},
        "splits": {},
    }

    def add(field: str, key: str, value: Any) -> None:
        summary[field][key] = summary[field].get(key, 0) + int(value)

    for stage, steps in stats.items():
        first_stage = stage.startswith("1")
        for step, counters in steps.items():
            reader = step.startswith("📖")
            for key, value in counters.items():
                if key.startswith("dropped_"):
                    add("dropped_by_reason", key.removeprefix("dropped_"), value)
                elif key.startswith("masked_"):
                    add("pii_masked", key.removeprefix("masked_"), value)
                elif key.startswith("malformed: "):
                    add("malformed_by_reason", key.removeprefix("malformed: "), value)
                elif key == "malformed_lines":
                    summary["malformed_lines"] += int(value)
                elif key in ("train", "heldout"):
                    add("splits", key, value)
                elif key in NORMALISATION_COUNTERS:
                    add("normalisation", key, value)
                elif key == "documents" and reader and first_stage:
                    summary["documents_in"] += int(value)
    summary["documents_kept"] = sum(summary["splits"].values())
    summary["dropped_total"] = sum(summary["dropped_by_reason"].values())
    return summary


def summary_markdown(summary: dict[str, Any], seconds: float) -> str:
    lines = [
        "# Corpus preparation",
        "",
        f"{summary['documents_in']:,} documents read, {summary['documents_kept']:,} kept "
        f"({summary['splits'].get('train', 0):,} train, {summary['splits'].get('heldout', 0):,} held out), "
        f"{summary['dropped_total']:,} dropped, {summary['malformed_lines']:,} malformed input lines skipped; "
        f"{seconds:.1f} s.",
        "",
        "| dropped because | documents |",
        "|---|---:|",
    ]
    for reason, count in sorted(summary["dropped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason.replace('_', ' ')} | {count:,} |")
    if summary["pii_masked"]:
        lines += ["", "| personal data masked | occurrences |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in sorted(summary["pii_masked"].items())]
    if summary["normalisation"]:
        lines += ["", "| normalisation | documents changed |", "|---|---:|"]
        lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in sorted(summary["normalisation"].items())]
    return "\n".join(lines) + "\n"


def prepare(
    inputs: list[CorpusInput],
    cfg: PrepareSection,
    work: Path,
    seed: int = 0,
    heldout_fraction: float = 0.05,
    text_unit: str = "paragraph",
    script: str = "hangul",
) -> dict[str, Any]:
    """Run (or resume) the pipeline in ``work``; write ``stats.json`` and ``summary.md``; return the summary."""
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    executors = build_stages(inputs, cfg, work, seed, heldout_fraction, text_unit, script)
    executors[-1].run()
    stats = read_stats(work / "logs")
    summary = summarize(stats)
    if summary["documents_kept"] == 0:
        raise DataError(f"no document survived preparation ({summary['dropped_by_reason'] or 'no input'})")
    seconds = time.perf_counter() - started
    atomic_write_json(
        work / "stats.json",
        {"summary": summary, "stages": stats, "seconds": round(seconds, 2), "config": cfg.model_dump(mode="json")},
    )
    atomic_write_text(work / "summary.md", summary_markdown(summary, seconds))
    return summary


def prepared_inputs(work: Path, split: str) -> list[CorpusInput]:
    """The cleaned shards of one split, as corpus inputs for the later phases."""
    fmt = "parquet" if any((work / "output" / split).glob("*.parquet")) else "jsonl"
    return [CorpusInput(path=str(work / "output" / split), format=fmt)]
