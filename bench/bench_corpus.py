"""Corpus preparation: near-duplicate recall, unique documents lost, noise removal and speed, against datatrove's
stock pipelines in the same run.

Input: the corpus bench/make_corpus.py builds from ``../shared/data/ko_corpus`` (pages of movie reviews whose pages
share a header and stock phrases, petitions, single reviews, injected exact and near copies, noise; ground truth in
``truth.json``). Pipelines, each in a fresh interpreter with the same tasks and workers, one after the other:

(a) redwhale's full pipeline (normalise, script and quality filters, PII, exact + MinHash near dedup with confirmed
    candidates, split, write);
(b) datatrove's stock GopherRepetitionFilter + GopherQualityFilter with datatrove's whitespace word tokenizer (one
    shared instance, so the second filter's tokenization is a cache hit) and FineWeb-2's kor_Hang thresholds
    (fineweb-2 configs/kor_Hang.yml);
(c) datatrove's stock MinHash deduplication alone (word 5-grams, 14 buckets x 8 hashes, FineWeb's settings).

Figures: documents/s and peak memory (summed RSS of the process tree, sampled) of each; near-duplicate recall per
edit level (a pair is found when not both copies are kept); unique documents removed as duplicates, counted as wrong
when no other input document shares half of their character 5-grams (exact Jaccard); noise removed per kind;
clean documents lost to the filters.

    pip install -e ".[bench]" -c constraints.txt   # spaCy, for datatrove's whitespace tokenizer
    python bench/bench_corpus.py [--pages 30000] [--tasks 2] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_corpus import LEVELS, build  # noqa: E402

KOR_HANG_STOPWORDS = [
    "의",
    "다",
    "이",
    "는",
    "에",
    "을",
    "한",
    "년",
    "하",
    "은",
    "를",
    "했",
    "고",
    "에서",
    "가",
    "있",
    "으로",
    "인",
    "월",
    "로",
    "되",
]  # fmt: skip  (fineweb-2 configs/kor_Hang.yml)


def run_worker(kind: str, data: Path, work: Path, tasks: int, workers: int) -> dict:
    """Run one pipeline in a fresh interpreter, sampling the memory of its process tree."""
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--work", str(work)]
    cmd += ["--tasks", str(tasks), "--workers", str(workers)]
    work.mkdir(parents=True, exist_ok=True)
    with open(work.parent / f"{kind}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        parent, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            total = 0
            with contextlib.suppress(psutil.Error):
                for p in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            peak = max(peak, total)
            time.sleep(0.05)
        out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} pipeline failed ({proc.returncode}); see {work.parent / f'{kind}.log'}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(peak / 2**20, 1)
    return result


def redwhale_worker(data: Path, work: Path, tasks: int, workers: int) -> dict:
    from redwhale.config.schema import CorpusInput, CorpusSection, PrepareSection
    from redwhale.corpus.pipeline import prepare

    corpus = CorpusSection(inputs=[CorpusInput(path=str(data / "bench-*.jsonl"))], heldout_fraction=0.0)
    summary = prepare(corpus, PrepareSection(tasks=tasks, workers=workers, keep_dropped=True), work)
    return {"summary": summary}


def gopher_worker(data: Path, work: Path, tasks: int, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    tokenizer = WhitespaceTokenizer()
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(data), glob_pattern="bench-*.jsonl"),
            GopherRepetitionFilter(
                language=tokenizer,
                dup_para_frac=0,
                dup_line_char_frac=0,
                dup_para_char_frac=0,
                dup_line_frac=0.374,
                top_n_grams=((2, 0.282), (3, 0.228), (4, 0.185)),
                dup_n_grams=((5, 0.201), (6, 0.184), (7, 0.168), (8, 0.154), (9, 0.14), (10, 0.127)),
            ),
            GopherQualityFilter(
                language=tokenizer,
                min_avg_word_length=1,
                max_avg_word_length=6,
                max_non_alpha_words_ratio=0.791,
                stop_words=KOR_HANG_STOPWORDS,
                min_stop_words=2,
            ),
            JsonlWriter(str(work / "output")),
        ],
        tasks=tasks,
        workers=workers,
        logging_dir=str(work / "logs"),
    ).run()
    return {}


def minhash_worker(data: Path, work: Path, tasks: int, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    cfg = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5)
    tokenizer = WhitespaceTokenizer()

    def stage(pipeline, n, name):
        return LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=min(workers, n), logging_dir=str(work / name))

    def reader():
        return JsonlReader(str(data), glob_pattern="bench-*.jsonl")

    stage([reader(), MinhashDedupSignature(str(work / "sigs"), cfg, language=tokenizer)], tasks, "l1").run()
    stage([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], 14, "l2").run()
    stage([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)], 1, "l3").run()
    writer = JsonlWriter(str(work / "dropped" / "duplicates"))
    final = [
        reader(),
        MinhashDedupFilter(str(work / "remove"), exclusion_writer=writer),
        JsonlWriter(str(work / "output")),
    ]
    stage(final, tasks, "l4").run()
    return {}


WORKERS = {"redwhale": redwhale_worker, "gopher": gopher_worker, "minhash": minhash_worker}


def _records(folder: Path):
    for path in folder.rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield path, json.loads(line)


def kept_ids(folder: Path) -> dict[str, str]:
    return {record["id"]: record["text"] for _, record in _records(folder)}


def dropped_reasons(folder: Path) -> dict[str, str]:
    """``{id: reason}`` of every dropped document (datatrove records the reason in ``metadata.filter_reason``)."""
    return {r["id"]: r.get("metadata", {}).get("filter_reason", p.parent.name) for p, r in _records(folder)}


def _shingles(text: str) -> set[int]:
    from redwhale.corpus.dedup import char_ngram_hashes, normalized_for_hash

    return set(char_ngram_hashes(normalized_for_hash(text), 5).tolist())


def best_jaccard(ids: list[str], texts: dict[str, str], enough: float = 0.5) -> dict[str, float]:
    """For each of ``ids``, the highest character 5-gram Jaccard with any other input document (exact on every
    document sharing at least two of the target's 64 smallest shingle hashes), or the first one found that reaches
    ``enough`` (a target's neighbours are not compared further once one is that close: same-movie pages share their
    smallest hashes with hundreds of pages)."""
    targets = {i: _shingles(texts[i]) for i in ids}
    index: dict[int, set[str]] = defaultdict(set)
    for i, shingles in targets.items():
        for h in sorted(shingles)[:64]:
            index[h].add(i)
    keys, best = set(index), dict.fromkeys(ids, 0.0)
    for j, text in texts.items():
        shingles = _shingles(text)
        hits = Counter(i for h in shingles & keys for i in index[h] if i != j)
        for i, count in hits.items():
            if count >= 2 and best[i] < enough:
                best[i] = max(best[i], len(targets[i] & shingles) / len(targets[i] | shingles))
    return best


def unique_documents(truth: dict, texts: dict[str, str]) -> list[str]:
    """Clean documents that are no injection's source and whose (whitespace-normalised) text occurs once."""
    sources = {a for a, _ in truth["exact"]} | {a for pairs in truth["near"].values() for a, _ in pairs}
    digest = {i: hashlib.sha1(" ".join(texts[i].split()).encode()).hexdigest() for i in truth["clean"]}
    counts = Counter(digest.values())
    mojibake_sources = {hashlib.sha1(" ".join(t.split()).encode()).hexdigest() for t in truth["mojibake"].values()}
    return [
        i for i in truth["clean"] if i not in sources and counts[digest[i]] == 1 and digest[i] not in mojibake_sources
    ]


def dedup_figures(truth: dict, texts: dict[str, str], kept: dict, reasons: dict, unique: list[str]) -> dict:
    found = {"exact": sum(1 for a, b in truth["exact"] if not (a in kept and b in kept)) / len(truth["exact"])}
    for level in LEVELS:
        pairs = truth["near"][str(level)]
        found[f"{level:.0%}"] = sum(1 for a, b in pairs if not (a in kept and b in kept)) / len(pairs)
    removed = [i for i in unique if reasons.get(i) in ("near_duplicate", "exact_duplicate", "duplicates")]
    best = best_jaccard(removed, texts)
    wrong = [i for i in removed if best[i] < 0.5]
    return {
        "recall": found,
        "unique": len(unique),
        "unique_removed": len(removed),
        "unique_wrongly_removed": len(wrong),
        "wrong_share": len(wrong) / len(unique),
        "wrong_by_kind": dict(Counter(truth["kinds"][i] for i in wrong)),
        "removed_by_kind": dict(Counter(truth["kinds"][i] for i in removed)),
    }


def _repaired(kept_text: str, original: str) -> bool:
    from redwhale.corpus.normalize import normalize_text
    from redwhale.corpus.pii import mask_pii

    original = mask_pii(normalize_text(original))[0]
    return " ".join(kept_text.split()) == " ".join(original.split())


def noise_figures(truth: dict, kept: dict, reasons: dict) -> dict:
    out = {}
    for kind, ids in truth["noise"].items():
        removed = [i for i in ids if i not in kept]
        repaired = [i for i in ids if i in kept and i in truth["mojibake"] and _repaired(kept[i], truth["mojibake"][i])]
        out[kind] = {"removed": len(removed) / len(ids), "handled": (len(removed) + len(repaired)) / len(ids)}
    lost = [i for i in truth["clean"] if i in reasons and reasons[i] not in ("near_duplicate", "exact_duplicate")]
    out["clean_lost"] = len(lost) / len(truth["clean"])
    out["clean_lost_by_reason"] = dict(Counter(reasons[i] for i in lost).most_common(6))
    return out


def report(results: dict, n_docs: int, size_mb: float) -> None:
    print("| pipeline | seconds | docs/s | MB/s | peak RSS (MiB) | speed vs Gopher |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, r in results.items():
        ratio = results["gopher"]["seconds"] / r["seconds"]
        print(f"| {kind} | {r['seconds']:.1f} | {n_docs / r['seconds']:,.0f} | {size_mb / r['seconds']:.2f} | "
              f"{r['peak_rss_mib']:,.0f} | {ratio:.2f}x |")  # fmt: skip
    for kind in ("redwhale", "minhash"):
        d = results[kind]["dedup"]
        recall = ", ".join(f"{k} {v:.3f}" for k, v in d["recall"].items())
        print(f"\n{kind}: recall {recall}; unique documents removed as duplicates {d['unique_removed']:,} of "
              f"{d['unique']:,}, wrongly (no other document at Jaccard >= 0.5) {d['unique_wrongly_removed']:,} "
              f"({d['wrong_share']:.2%}): {d['wrong_by_kind']}; removed by kind {d.get('removed_by_kind')}")  # fmt: skip
    n = results["redwhale"]["noise"]
    print(
        "\nredwhale noise handled: "
        + ", ".join(f"{k} {v['handled']:.1%}" for k, v in n.items() if isinstance(v, dict) and "handled" in v)
    )
    print(f"redwhale clean documents lost to filters: {n['clean_lost']:.2%} {n['clean_lost_by_reason']}")
    pairs = results["redwhale"].get("summary", {}).get("near_duplicates")
    print(f"redwhale near-duplicate candidate pairs: {pairs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=30_000)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    parser.add_argument("--only", default="gopher,minhash,redwhale", help="pipelines to run (comma-separated)")
    parser.add_argument("--out", type=Path, default=HERE / "measured" / "corpus.json")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        started = time.perf_counter()
        result = WORKERS[args.worker](args.data, args.work, args.tasks, args.workers)
        print(json.dumps({**result, "seconds": time.perf_counter() - started}))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-corpus-")) if args.keep is None else args.keep
    data = root / "data"
    truth = (
        json.loads((data / "truth.json").read_text())
        if (data / "truth.json").is_file()
        else build(data, args.pages, args.seed)
    )
    texts = {}
    for name in sorted(data.glob("bench-*.jsonl")):
        with open(name, encoding="utf-8") as handle:
            texts.update((doc["id"], doc["text"]) for doc in map(json.loads, handle))  # fmt: skip
    n_docs, size_mb = len(texts), sum(p.stat().st_size for p in data.glob("bench-*.jsonl")) / 1e6
    print(f"benchmark corpus: {n_docs:,} documents, {size_mb:.1f} MB ({args.tasks} tasks, {args.workers} workers)")
    unique = unique_documents(truth, texts)
    results = {}
    for kind in args.only.split(","):
        shutil.rmtree(root / kind, ignore_errors=True)
        results[kind] = r = run_worker(kind, data, root / kind, args.tasks, args.workers)
        print(
            f"{kind:>9}: {r['seconds']:.1f} s, {n_docs / r['seconds']:,.0f} docs/s, peak RSS {r['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
        if kind in ("redwhale", "minhash"):
            kept, reasons = kept_ids(root / kind / "output"), dropped_reasons(root / kind / "dropped")
            r["dedup"] = dedup_figures(truth, texts, kept, reasons, unique)
            if kind == "redwhale":
                r["noise"] = noise_figures(truth, kept, reasons)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"documents": n_docs, "mb": size_mb, "results": results}, indent=2, default=str))
    if {"gopher", "redwhale", "minhash"} <= set(results):
        report(results, n_docs, size_mb)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
