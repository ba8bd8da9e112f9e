"""The corpus benchmark's input, built from ``../shared/data/ko_corpus/ko_train.jsonl`` with its ground truth.

What it holds (every record's ``metadata.kind`` and ``metadata.source`` say what it is):

- ``page``: pages of movie reviews, as a review site shows them. The pages of one movie share a header line and
  stock phrases around each review (author, date, likes, "report"), and each holds different reviews, so two pages
  of a movie share a third of their character 5-grams or so without being duplicates: the many neighbours at
  Jaccard 0.2-0.4 that unconfirmed LSH candidates turn into false removals;
- ``petition``: the 2,962 petitions as they are; ``review``: single reviews;
- ``exact``: verbatim copies; ``near-<level>``: copies with 2, 5, 10, 15 or 25% of words changed (replaced by a word
  of another document, deleted, or followed by an inserted word, in equal shares), of pages and petitions;
- ``noise-<kind>``: English, web boilerplate, mojibake (UTF-8 read as cp1252, which ftfy can repair; as cp949,
  which it cannot), repeated lines, character-run spam.

    python bench/make_corpus.py --out DIR [--pages 30000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-windows-1252 codec)

from redwhale.corpus.bundled import python_docs_english

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
LEVELS = (0.02, 0.05, 0.10, 0.15, 0.25)
INJECTED = 300  # of each kind of copy and noise

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
TITLE_WORDS = [
    "바람",
    "그림자",
    "여름",
    "도시",
    "마지막",
    "약속",
    "기억",
    "바다",
    "별",
    "밤",
    "사랑",
    "전쟁",
    "비밀",
    "소년",
    "겨울",
    "길",
    "집",
    "노래",
    "꿈",
    "시간",
]


def load(corpus: Path = CORPUS) -> tuple[list[str], list[str]]:
    petitions, reviews = [], []
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            (petitions if record["source"] == "petitions" else reviews).append(record["text"])
    return petitions, reviews


STOCK = "작성자 님의 리뷰 · 이 리뷰가 도움이 되었나요? 공감 비공감 · 신고하기 · 스포일러 포함 리뷰 보기"


def page(title: str, synopsis: str, number: int, reviews: list[str], rng: random.Random) -> str:
    """One page of a movie's reviews: the movie's header and synopsis, then each review inside the site's stock
    phrases."""
    lines = [
        f"[영화] {title} 관객 리뷰 - {number}페이지",
        f"줄거리: {synopsis}",
        "네티즌 평점 | 관람객 평점 | 기자·평론가 평점 | 리뷰 쓰기 | 최신순 | 공감순",
        "",
    ]
    for review in reviews:
        lines += [f"★ {rng.randint(1, 10)}점 | {review.strip()}", STOCK, ""]
    lines.append("이 영화의 리뷰 더보기 > 평점 작성하기 > 목록으로 > 관련 영화 추천 > 예매하기")
    return "\n".join(lines)


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


def noise(sources: list[str], rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    """Noise documents by kind, each with the clean text it was made from (mojibake) or None."""
    english = [p for p in python_docs_english(unit="paragraph") if len(p) > 200]
    rng.shuffle(english)
    moji = {kind: rng.sample(sources, INJECTED) for kind in ("cp1252", "cp949")}
    return {
        "english": [(t, None) for t in english[:INJECTED]],
        "boilerplate": [("\n".join(rng.sample(BOILERPLATE_LINES, rng.randint(5, 10))), None) for _ in range(INJECTED)],
        "mojibake_cp1252": [(s.encode("utf-8").decode("sloppy-windows-1252"), s) for s in moji["cp1252"]],
        "mojibake_cp949": [(s.encode("utf-8").decode("cp949", errors="replace"), s) for s in moji["cp949"]],
        "repeated_lines": [
            ("\n".join([rng.choice(s.split(". "))] * rng.randint(8, 30)), None) for s in rng.sample(sources, INJECTED)
        ],
        "char_runs": [
            (
                " ".join(
                    rng.choice(["ㅋ" * rng.randint(20, 80), "!" * rng.randint(20, 60), "ㅎ" * rng.randint(20, 60)])
                    for _ in range(rng.randint(3, 8))
                ),
                None,
            )
            for _ in range(INJECTED)
        ],
    }


def clean_documents(pages: int, rng: random.Random) -> list[dict]:
    petitions, reviews = load()
    movies = [(" ".join(rng.sample(TITLE_WORDS, 2)), rng.choice(petitions)[:200].replace("\n", " "))
              for _ in range(max(1, pages // 10))]  # fmt: skip
    records = [{"text": t, "metadata": {"kind": "petition"}} for t in petitions]
    for i in range(pages):
        title, synopsis = movies[i % len(movies)]
        text = page(title, synopsis, i // len(movies) + 1, rng.sample(reviews, rng.randint(6, 12)), rng)
        records.append({"text": text, "metadata": {"kind": "page", "movie": i % len(movies)}})
    records += [{"text": t, "metadata": {"kind": "review"}} for t in rng.sample(reviews, len(reviews) // 2)]
    for index, record in enumerate(records):
        record["id"] = f"c{index}"
    return records


def build(out: Path, pages: int = 30_000, seed: int = 0, shards: int = 4) -> dict:
    """Write ``out/bench-<shard>.jsonl`` and ``out/truth.json``; return the truth."""
    rng = random.Random(seed)
    records = clean_documents(pages, rng)
    clean = {r["id"]: r["text"] for r in records}
    long_ids = [r["id"] for r in records if r["metadata"]["kind"] in ("page", "petition") and len(r["text"]) > 400]
    rng.shuffle(long_ids)
    picks = iter(long_ids)
    vocabulary = [w for r in records[:5000] for w in r["text"].split() if 1 < len(w) < 8]
    truth: dict = {"exact": [], "near": defaultdict(list), "noise": defaultdict(list), "mojibake": {}}
    for k in range(INJECTED):
        source = next(picks)
        records.append({"id": f"x{k}", "text": clean[source], "metadata": {"kind": "exact", "source": source}})
        truth["exact"].append([source, f"x{k}"])
    for level in LEVELS:
        for k in range(INJECTED):
            source, doc = next(picks), f"n{level}-{k}"
            text = edit_words(clean[source], level, vocabulary, rng)
            records.append({"id": doc, "text": text, "metadata": {"kind": f"near-{level}", "source": source}})
            truth["near"][str(level)].append([source, doc])
    sources = [clean[i] for i in long_ids[-3000:]]
    for kind, items in noise(sources, rng).items():
        for k, (text, original) in enumerate(items):
            doc = f"z{kind}-{k}"
            records.append({"id": doc, "text": text, "metadata": {"kind": f"noise-{kind}"}})
            truth["noise"][kind].append(doc)
            if original is not None:
                truth["mojibake"][doc] = original
    rng.shuffle(records)
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):  # datatrove gives each task whole files: several files let the workers share
        with open(out / f"bench-{shard}.jsonl", "w", encoding="utf-8") as handle:
            for record in records[shard::shards]:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    truth["clean"] = list(clean)
    truth["kinds"] = {r["id"]: r["metadata"]["kind"] for r in records}
    (out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pages", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = build(args.out, args.pages, args.seed)
    size = sum(p.stat().st_size for p in args.out.glob("bench-*.jsonl")) / 1e6
    print(f"{len(truth['kinds']):,} documents, {size:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
