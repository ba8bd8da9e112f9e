"""Corpus preparation: near-duplicate recall, noise removal, false removals, speed against datatrove's Gopher pipeline.

Builds a benchmark corpus from ``../shared/data/ko_corpus/ko_train.jsonl`` (45,920 real Korean documents) with, all
recorded as ground truth:

- exact duplicates (verbatim copies of random documents);
- near duplicates at 2%, 5%, 10%, 15% and 25% of words changed (each changed word replaced by a word of another
  document, deleted, or followed by an inserted word, in equal shares);
- noise documents: English, web boilerplate, mojibake (UTF-8 read as cp1252: ftfy can repair it; UTF-8 read as
  cp949: it cannot), repeated lines, character-run spam.

Then runs, in this process's turn and on the same input with the same tasks and workers:

(a) redwhale's full pipeline (normalise, script and quality filters, PII, exact + MinHash near dedup, split, write);
(b) datatrove's stock Gopher pipeline alone (JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter ->
    JsonlWriter), the baseline the issue names.

It prints documents/s and MB/s of both, peak memory (the summed RSS of the process tree, sampled), near-duplicate
recall per edit level (a pair counts as found when the pipeline did not keep both copies), the share of unique
documents removed as duplicates, and per noise kind the share removed (or, for mojibake, repaired).

    pip install -e ".[bench]" -c constraints.txt   # spaCy, for the Gopher baseline
    python bench/bench_corpus.py [--docs 45920] [--tasks 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
LEVELS = (0.02, 0.05, 0.10, 0.15, 0.25)

BOILERPLATE_LINES = [
    "홈 > 뉴스 > 사회",
    "로그인 | 회원가입 | 고객센터",
    "이전 기사 다음 기사",
    "댓글 0 좋아요 0",
    "URL 복사 카카오톡 공유 페이스북 공유 트위터 공유",
    "많이 본 뉴스",
    "구독하기",
    "ⓒ 한국경제신문. 무단전재 및 재배포 금지",
    "Copyright © 2023 All rights reserved.",
    "▶ 네이버에서 뉴스 구독하기 클릭!",
    "기사제보 및 보도자료 news@example.co.kr",
    "이용약관 | 개인정보처리방침 | 청소년보호정책",
    "전체메뉴 검색 닫기",
    "Top ▲",
    "글자크기 가 가 가",
    "인쇄 스크랩 공유",
]


def load_corpus(limit: int) -> list[str]:
    texts = []
    with open(CORPUS, encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if len(texts) >= limit:
                break
    return texts


def edit_words(text: str, level: float, vocabulary: list[str], rng: random.Random) -> str:
    words = text.split(" ")
    n = max(1, round(level * len(words)))
    for index in sorted(rng.sample(range(len(words)), n), reverse=True):
        kind = index % 3
        if kind == 0:
            words[index] = rng.choice(vocabulary)
        elif kind == 1:
            del words[index]
        else:
            words.insert(index + 1, rng.choice(vocabulary))
    return " ".join(words)


def english_paragraphs(n: int, rng: random.Random) -> list[str]:
    from redwhale.corpus.bundled import python_docs_english

    paragraphs = [p for p in python_docs_english(unit="paragraph") if len(p) > 200]
    rng.shuffle(paragraphs)
    return paragraphs[:n]


def build(out: Path, docs: int, seed: int) -> dict:
    rng = random.Random(seed)
    clean = load_corpus(docs)
    vocabulary = [w for t in clean[:5000] for w in t.split() if 1 < len(w) < 8]
    records: list[dict] = []
    truth: dict = {"clean": [], "exact": [], "near": defaultdict(list), "noise": defaultdict(list), "mojibake": {}}
    for i, text in enumerate(clean):
        records.append({"id": f"c{i}", "text": text})
        truth["clean"].append(f"c{i}")
    long_docs = [i for i, t in enumerate(clean) if len(t.split(" ")) >= 40]
    rng.shuffle(long_docs)
    picks = iter(long_docs)
    for k in range(300):
        source = next(picks)
        records.append({"id": f"x{k}", "text": clean[source]})
        truth["exact"].append([f"c{source}", f"x{k}"])
    for level in LEVELS:
        for k in range(300):
            source = next(picks)
            records.append({"id": f"n{level}-{k}", "text": edit_words(clean[source], level, vocabulary, rng)})
            truth["near"][str(level)].append([f"c{source}", f"n{level}-{k}"])
    import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-windows-1252 codec)

    sources = [clean[i] for i in long_docs[-2000:]]
    moji_ids = {kind: rng.sample(long_docs[-2000:], 300) for kind in ("mojibake_cp1252", "mojibake_cp949")}
    moji_sources = {kind: [clean[i] for i in ids] for kind, ids in moji_ids.items()}
    # a repaired mojibake document is a duplicate of its source: those sources are not "unique"
    truth["mojibake_sources"] = [f"c{i}" for ids in moji_ids.values() for i in ids]
    noise: dict[str, list[str]] = {
        "english": english_paragraphs(300, rng),
        "boilerplate": ["\n".join(rng.sample(BOILERPLATE_LINES, rng.randint(5, 10))) for _ in range(300)],
        # UTF-8 read as Windows-1252 (the common web mojibake; ftfy's sloppy codec keeps it reversible)
        "mojibake_cp1252": [s.encode("utf-8").decode("sloppy-windows-1252") for s in moji_sources["mojibake_cp1252"]],
        # UTF-8 read as cp949: mostly Hanja and replacement characters, beyond repair
        "mojibake_cp949": [s.encode("utf-8").decode("cp949", errors="replace") for s in moji_sources["mojibake_cp949"]],
        "repeated_lines": [
            "\n".join([rng.choice(s.split(". "))] * rng.randint(8, 30)) for s in rng.sample(sources, 300)
        ],
        "char_runs": [
            " ".join(
                rng.choice(["ㅋ" * rng.randint(20, 80), "!" * rng.randint(20, 60), "ㅎ" * rng.randint(20, 60)])
                for _ in range(rng.randint(3, 8))
            )
            for _ in range(300)
        ],
    }
    for kind, texts in noise.items():
        for k, text in enumerate(texts):
            doc_id = f"z{kind}-{k}"
            records.append({"id": doc_id, "text": text})
            truth["noise"][kind].append(doc_id)
    for kind, originals in moji_sources.items():
        for k, original in enumerate(originals):
            truth["mojibake"][f"z{kind}-{k}"] = original
    rng.shuffle(records)
    out.mkdir(parents=True, exist_ok=True)
    shards = 4  # datatrove gives each task whole files: several files let the workers share the input
    for shard in range(shards):
        with open(out / f"bench-{shard}.jsonl", "w", encoding="utf-8") as handle:
            for record in records[shard::shards]:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    truth["texts"] = {r["id"]: r["text"] for r in records}
    return truth


def run_worker(kind: str, data: Path, work: Path, tasks: int, workers: int) -> dict:
    """Run one pipeline in a fresh interpreter (so the memory of one does not count against the other)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--work", str(work)]
    cmd += ["--tasks", str(tasks), "--workers", str(workers)]
    log = open(work.parent / f"{kind}.log", "w")  # noqa: SIM115  (datatrove's logs, kept for inspection)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    import psutil

    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.05)
    out = proc.stdout.read()
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} pipeline failed ({proc.returncode}); see {log.name}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(peak / 2**20, 1)
    return result


def worker(kind: str, data: Path, work: Path, tasks: int, workers: int) -> None:
    started = time.perf_counter()
    if kind == "redwhale":
        from redwhale.config.schema import CorpusInput, PrepareSection
        from redwhale.corpus.pipeline import prepare

        bands, rows = (
            (int(x) for x in os.environ.get("BENCH_LSH", "").split("x"))
            if os.environ.get("BENCH_LSH")
            else (
                PrepareSection().minhash_bands,
                PrepareSection().minhash_rows,
            )
        )
        cfg = PrepareSection(tasks=tasks, workers=workers, keep_dropped=True, minhash_bands=bands, minhash_rows=rows)
        summary = prepare([CorpusInput(path=str(data / "*.jsonl"))], cfg, work, heldout_fraction=0.0)
        result = {"summary": summary}
    else:
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
        from datatrove.pipeline.readers import JsonlReader
        from datatrove.pipeline.writers import JsonlWriter

        LocalPipelineExecutor(
            pipeline=[
                JsonlReader(str(data), glob_pattern="*.jsonl"),
                GopherRepetitionFilter(),
                GopherQualityFilter(),
                JsonlWriter(str(work / "output")),
            ],
            tasks=tasks,
            workers=workers,
            logging_dir=str(work / "logs"),
        ).run()
        result = {}
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


def _records(folder: Path):
    for path in folder.rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield path, json.loads(line)


def read_ids(folder: Path) -> dict[str, str]:
    return {record["id"]: record["text"] for _, record in _records(folder)}


def dropped_reasons(folder: Path) -> dict[str, str]:
    """``{id: reason}`` of every dropped document (datatrove records the reason in ``metadata.filter_reason``)."""
    return {
        record["id"]: record.get("metadata", {}).get("filter_reason", path.parent.name)
        for path, record in _records(folder)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=45_920)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    parser.add_argument("--worker", choices=["redwhale", "gopher"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.work, args.tasks, args.workers)
        return
    if not CORPUS.is_file():
        raise SystemExit(f"needs {CORPUS} (see ../shared/data/PROVENANCE.md)")
    root = Path(tempfile.mkdtemp(prefix="bench-corpus-")) if args.keep is None else args.keep
    truth = build(root / "data", args.docs, args.seed)
    data = root / "data"
    n_docs, size_mb = len(truth["texts"]), sum(p.stat().st_size for p in data.glob("*.jsonl")) / 1e6
    print(f"benchmark corpus: {n_docs:,} documents, {size_mb:.1f} MB ({args.tasks} tasks, {args.workers} workers)")

    results = {}
    for kind in ("gopher", "redwhale"):
        shutil.rmtree(root / kind, ignore_errors=True)
        results[kind] = run_worker(kind, data, root / kind, args.tasks, args.workers)
        r = results[kind]
        print(
            f"{kind:>9}: {r['seconds']:.1f} s, {n_docs / r['seconds']:,.0f} docs/s, {size_mb / r['seconds']:.2f} MB/s, "
            f"peak RSS {r['peak_rss_mib']:,.0f} MiB"
        )
    ratio = results["gopher"]["seconds"] / results["redwhale"]["seconds"]
    print(f"redwhale full pipeline speed / Gopher pipeline alone: {ratio:.2f}x")

    kept = read_ids(root / "redwhale" / "output")
    reasons = dropped_reasons(root / "redwhale" / "dropped")
    texts = truth["texts"]
    print("\nnear-duplicate recall (a pair is found when not both copies are kept)")
    print("| edit level | pairs | found | recall |")
    print("|---|---|---|---|")
    exact_found = sum(1 for a, b in truth["exact"] if not (a in kept and b in kept))
    print(f"| exact copy | {len(truth['exact'])} | {exact_found} | {exact_found / len(truth['exact']):.3f} |")
    for level in LEVELS:
        pairs = truth["near"][str(level)]
        found = sum(1 for a, b in pairs if not (a in kept and b in kept))
        print(f"| {level:.0%} | {len(pairs)} | {found} | {found / len(pairs):.3f} |")

    # unique documents: clean documents that are no injection's source and whose text occurs once in the input
    sources = {a for a, _ in truth["exact"]} | {a for pairs in truth["near"].values() for a, _ in pairs}
    sources |= set(truth["mojibake_sources"])
    counts = Counter(hashlib.sha1(" ".join(texts[i].split()).encode()).hexdigest() for i in truth["clean"])
    unique = [
        i
        for i in truth["clean"]
        if i not in sources and counts[hashlib.sha1(" ".join(texts[i].split()).encode()).hexdigest()] == 1
    ]
    dup_removed = [i for i in unique if reasons.get(i) in ("near_duplicate", "exact_duplicate")]
    best = best_jaccard(dup_removed, texts)
    bands = Counter("<0.3" if j < 0.3 else "0.3-0.5" if j < 0.5 else ">=0.5" for j in best.values())
    wrong = bands["<0.3"] + bands["0.3-0.5"]
    print(
        f"\nunique documents removed as duplicates: {len(dup_removed)} of {len(unique):,} "
        f"({len(dup_removed) / len(unique):.2%}); the real corpus has near duplicates of its own (petitions are "
        f"copied): by their best character 5-gram Jaccard with another input document: {dict(bands)}"
    )
    print(
        f"unique documents wrongly removed (no other document with Jaccard >= 0.5): {wrong} ({wrong / len(unique):.2%})"
    )
    pair_j = {
        level: sum(jaccard(texts[a], texts[b]) for a, b in truth["near"][str(level)]) / len(truth["near"][str(level)])
        for level in LEVELS
    }
    print("mean Jaccard of the injected pairs: " + ", ".join(f"{k:.0%} edits {v:.2f}" for k, v in pair_j.items()))

    print("\nnoise removal (mojibake also counts as handled when repaired to the original text)")
    print("| kind | documents | removed | repaired | handled | top reasons |")
    print("|---|---|---|---|---|---|")
    for kind, ids in truth["noise"].items():
        removed = [i for i in ids if i not in kept]
        repaired = [
            i for i in ids if i in kept and kind.startswith("mojibake") and _repaired(kept[i], truth["mojibake"][i])
        ]
        top = Counter(reasons.get(i, "?") for i in removed).most_common(2)
        print(
            f"| {kind} | {len(ids)} | {len(removed) / len(ids):.1%} | {len(repaired) / len(ids):.1%} | "
            f"{(len(removed) + len(repaired)) / len(ids):.1%} | {', '.join(f'{r} {c}' for r, c in top)} |"
        )
    clean_filtered = [
        i for i in truth["clean"] if i in reasons and reasons[i] not in ("near_duplicate", "exact_duplicate")
    ]
    by_reason = Counter(reasons[i] for i in clean_filtered).most_common(6)
    print(
        f"\nclean Korean documents removed by the filters: {len(clean_filtered):,} of {len(truth['clean']):,} "
        f"({len(clean_filtered) / len(truth['clean']):.2%}): {', '.join(f'{r} {c}' for r, c in by_reason)}"
    )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


def _shingles(text: str) -> set[int]:
    from redwhale.corpus.dedup import char_ngram_hashes, normalized_for_hash

    return set(char_ngram_hashes(normalized_for_hash(text), 5).tolist())


def jaccard(a: str, b: str) -> float:
    x, y = _shingles(a), _shingles(b)
    return len(x & y) / max(1, len(x | y))


def best_jaccard(ids: list[str], texts: dict[str, str]) -> dict[str, float]:
    """For each of ``ids``, the highest character 5-gram Jaccard with any other input document (exact, found through
    an index of each target's 64 smallest shingle hashes)."""
    targets = {i: _shingles(texts[i]) for i in ids}
    index: dict[int, set[str]] = defaultdict(set)
    for i, shingles in targets.items():
        for h in sorted(shingles)[:64]:
            index[h].add(i)
    keys = set(index)
    best = dict.fromkeys(ids, 0.0)
    for j, text in texts.items():
        shingles = _shingles(text)
        hits = Counter(i for h in shingles & keys for i in index[h] if i != j)
        for i, count in hits.items():
            if count >= 2:
                best[i] = max(best[i], len(targets[i] & shingles) / len(targets[i] | shingles))
    return best


def _repaired(kept_text: str, original: str) -> bool:
    from redwhale.corpus.normalize import normalize_text
    from redwhale.corpus.pii import mask_pii

    original = mask_pii(normalize_text(original))[0]
    return " ".join(kept_text.split()) == " ".join(original.split())


if __name__ == "__main__":
    main()
