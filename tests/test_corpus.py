"""Corpus preprocessing: each step on hand-written Korean examples, PII patterns, near duplicates, and the datatrove
pipeline end to end with two tasks."""

import gzip
import json
import random
import unicodedata

import numpy as np
import pytest
from datatrove.data import Document

from helpers import ENGLISH_LINES, KOREAN_LINES
from redwhale.config.schema import CorpusInput, CorpusSection, PrepareSection
from redwhale.corpus.filters import KoreanQualityFilter, ScriptFilter
from redwhale.corpus.normalize import normalize_text
from redwhale.corpus.pii import mask_pii
from redwhale.corpus.pipeline import prepare

PETITION = (
    "안녕하세요. 저는 서울에 사는 평범한 직장인입니다. 최근 대중교통 요금이 크게 올라서 많은 시민들이 "
    "어려움을 겪고 있습니다. 정부에서 이 문제를 다시 검토해 주시기를 간곡히 부탁드립니다. "
    "특히 출퇴근 시간에 버스와 지하철을 이용하는 학생과 노인들의 부담이 큽니다."
)


def doc(text):
    return Document(text=text, id="x")


def verdict(step, text):
    result = step.filter(doc(text))
    return (True, None) if result is True else result


# --------------------------------------------------------------------------------------------------- normalise
def test_nfc_and_stray_jamo():
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert normalize_text(decomposed) == "한국어"
    assert normalize_text("자음 \u1100 하나") == "자음 ㄱ 하나"  # a lone conjoining jamo becomes the visible jamo


def test_mojibake_is_repaired():
    broken = "안녕하세요 반갑습니다".encode().decode("latin-1")
    counts = {}
    assert normalize_text(broken, counts) == "안녕하세요 반갑습니다"
    assert counts["mojibake_fixed"] == 1


def test_controls_zero_width_whitespace_html_boilerplate():
    text = (
        "<p>대한민국은&nbsp;민주공화국이다.</p><br>국민\u200b의\u00a0  권리\x07\t\t입니다.\r\n\r\n\r\n\r\n"
        "무단 전재 및 재배포 금지\n▶ 네이버에서 구독하기 바로가기\n마지막 문장입니다."
    )
    counts = {}
    # </p><br> is a paragraph break: a blank line
    assert normalize_text(text, counts) == "대한민국은 민주공화국이다.\n\n국민의 권리 입니다.\n\n마지막 문장입니다."
    assert {"html_cleaned", "controls_removed", "boilerplate_lines_removed"} <= set(counts)


STOCK = "이 리뷰가 도움이 되었나요? 공감 · 신고하기"


def test_a_page_template_is_kept_once_and_the_page_survives_the_repetition_rules():
    reviews = ["정말 재밌다 또 보고 싶어요", "배우 연기가 최고였어요", "1점도 아깝다", "음악이 좋았습니다", "별로예요"]
    page = "\n".join(["[영화] 기생충 관객 리뷰"] + [line for r in reviews for line in (r, STOCK, "")])
    assert verdict(KoreanQualityFilter(), page) == (False, "duplicate_lines")  # as Gopher would: a third are repeats
    counts = {}
    cleaned = normalize_text(page, counts)
    assert cleaned.count(STOCK) == 1 and all(r in cleaned for r in reviews)
    assert counts["template_lines_removed"] == 1
    assert verdict(KoreanQualityFilter(), cleaned) == (True, None)
    assert normalize_text(page, remove_template_lines=False).count(STOCK) == len(reviews)


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(["지금 바로 클릭하세요"] * 12),  # back to back: spam for the repetition rules, not a template
        "\n\n".join(["지금 바로 클릭하세요"] * 12),
        f"첫 줄입니다\n{STOCK}\n둘째 줄입니다\n{STOCK}\n셋째 줄",  # twice is not a template
    ],
)
def test_lines_that_are_not_a_template_are_left_for_the_rules(text):
    assert normalize_text(text) == text


def test_clean_text_is_left_alone():
    for line in KOREAN_LINES + ENGLISH_LINES[:2]:
        assert normalize_text(line) == line.strip()


# ------------------------------------------------------------------------------------------------------ filters
def test_script_filter_keeps_korean_and_drops_english():
    step = ScriptFilter()
    assert verdict(step, PETITION) == (True, None)
    assert verdict(step, "이 영화 진짜 재밌어요 ㅋㅋ 10점 만점에 10점!") == (True, None)
    assert verdict(step, " ".join(ENGLISH_LINES)) == (False, "not_target_script")
    assert verdict(step, "12345 !!! ???") == (False, "not_target_script")


@pytest.mark.parametrize(
    "text",
    [
        PETITION,
        "굿",
        "최고의 영화 ㅠㅠ",
        "재밌어요ㅋㅋㅋ 또 보고 싶다",
        "1점도 아깝다...",
        "정말 재밌다\n배우 연기 최고ㅋㅋ\n또 보고 싶어요",  # informal lines without periods still end sentences
        "대한민국헌법\n\n제1장 총강\n\n제1조 ① 대한민국은 민주공화국이다.\n② 모든 권력은 국민으로부터 나온다.",
    ],
)
def test_quality_filter_keeps_real_korean(text):
    assert verdict(KoreanQualityFilter(), text) == (True, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("지금 바로 클릭하세요\n" * 12, "duplicate_lines"),
        ("ㅋ" * 40, "character_runs"),
        ("!!!!@@@@####$$$$%%%%^^^^&&&&****((((", "symbols"),
        ("010 1234 5678 9999 0000 1111 2222 3333 4444", "digits"),
        ("", "too_short"),
        ("무료 쿠폰 받아가세요 " * 30, "duplicate_ngrams"),
        ("홈 > 뉴스 > 사회\n글자크기 가 가 가\n전체메뉴 검색 닫기\nURL 복사 카카오톡 공유", "no_sentences"),
        ("안녕하세요".encode().decode("cp949", errors="replace") + " 대한민국 만세입니다", "undecodable"),
    ],
)
def test_quality_filter_drops_noise_with_its_reason(text, reason):
    assert verdict(KoreanQualityFilter(), text) == (False, reason)


# ---------------------------------------------------------------------------------------------------------- PII
@pytest.mark.parametrize(
    ("text", "masked", "kind"),
    [
        ("주민번호는 900101-1234567 입니다", "주민번호는 [주민번호] 입니다", "rrn"),
        ("연락처 010-1234-5678 로 주세요", "연락처 [전화번호] 로 주세요", "phone"),
        ("사무실 02-123-4567, 팩스 031-234-5678", "사무실 [전화번호], 팩스 [전화번호]", "phone"),
        ("해외에서는 +82 10-1234-5678", "해외에서는 [전화번호]", "phone"),
        ("문의: hong.gildong@example.co.kr 로", "문의: [이메일] 로", "email"),
        ("서버 192.168.0.12 접속", "서버 [IP주소] 접속", "ip"),
        ("입금 계좌 110-123-456789 (신한)", "입금 계좌 [계좌번호] (신한)", "account"),
    ],
)
def test_pii_is_masked_with_typed_placeholders(text, masked, kind):
    out, counts = mask_pii(text)
    assert out == masked and counts[kind] >= 1


@pytest.mark.parametrize(
    "text",
    [
        "2019-04-15에 청원을 올렸습니다",
        "2017.08.22 13:00 기준",
        "가격은 1,000,000원입니다",
        "원주율 3.14159",
        "버전 1.2.3 배포",
        "2018-2019 시즌",
        "우편번호 123456",
        "전화 주세요 119",
        "1588-1234 고객센터 (대표번호)",
        "제19대 대통령 선거는 2017년 5월 9일",
        "총 3,456,789명이 서명했습니다",
    ],
)
def test_pii_spares_dates_prices_and_numbers(text):
    assert mask_pii(text) == (text, {})


# ----------------------------------------------------------------------------------------------- near duplicates
def edit_words(text, share, rng):
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        words[i] = rng.choice(["그리고", "정말", "매우", "새로운", "다른", "많은"])
    return " ".join(words)


def test_a_near_duplicate_with_a_tenth_of_words_edited_is_found(tmp_path):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    from redwhale.corpus.dedup import DedupSignatures

    cfg = PrepareSection()
    config = MinhashConfig(
        hash_config=HashConfig(precision=64), num_buckets=cfg.minhash_bands, hashes_per_bucket=cfg.minhash_rows
    )
    step = DedupSignatures(str(tmp_path / "m"), None, config, cfg.minhash_ngram)
    rng = random.Random(0)
    base = PETITION + " " + " ".join(KOREAN_LINES[:6])
    signature = step.get_signature(step.get_shingles(base))
    found = 0
    for _ in range(20):
        copy = step.get_signature(step.get_shingles(edit_words(base, 0.10, rng)))
        found += any(a == b for a, b in zip(signature, copy, strict=True))
    unrelated = step.get_signature(step.get_shingles(" ".join(KOREAN_LINES[10:20])))
    assert found >= 18
    assert not any(a == b for a, b in zip(signature, unrelated, strict=True))


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def raw_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    rng = random.Random(3)
    words = sorted({w.strip(".,?!") for line in KOREAN_LINES + [PETITION] for w in line.split()})
    docs = [" ".join(rng.sample(words, 40)) + "." for _ in range(40)]  # distinct documents
    docs.append(docs[0])  # exact duplicate (after normalisation: extra spaces)
    docs[-1] = docs[-1].replace(" ", "  ", 3)
    docs.append(edit_words(docs[1], 0.10, rng))  # near duplicate
    docs.append(" ".join(ENGLISH_LINES))  # not Korean
    docs.append("반복되는 광고 문장입니다\n" * 10)  # repeated lines
    docs.append(f"{PETITION} 제 번호는 010-9876-5432 입니다.")  # PII
    half = len(docs) // 2
    for name, part in (("a.jsonl", docs[:half]), ("b.jsonl", docs[half:])):
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in part]
        if name == "b.jsonl":
            lines.insert(2, "{broken json")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, len(docs)


def read_output(work):
    out = {}
    for split in ("train", "heldout"):
        out[split] = []
        for path in sorted((work / "output" / split).glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                out[split] += [json.loads(line)["text"] for line in handle]
    return out


def test_pipeline_end_to_end_with_two_tasks(tmp_path, raw_corpus):
    folder, total = raw_corpus
    cfg = PrepareSection(tasks=2, workers=1, keep_dropped=True)
    corpus = CorpusSection(inputs=[CorpusInput(path=str(folder))], heldout_fraction=0.2)
    summary = prepare(corpus, cfg, tmp_path / "w")
    drops = summary["dropped_by_reason"]
    assert drops["not_target_script"] == 1
    assert drops["duplicate_lines"] == 1
    assert drops["exact_duplicate"] == 1
    assert drops["near_duplicate"] == 1
    pairs = summary["near_duplicates"]
    assert pairs["confirmed"] >= 1 and pairs["candidate"] == pairs["confirmed"] + pairs["rejected"]
    assert summary["malformed_lines"] == 1
    assert summary["pii_masked"] == {"phone": 1}
    assert summary["documents_in"] == total
    assert summary["documents_kept"] == total - 4
    output = read_output(tmp_path / "w")
    assert len(output["train"]) + len(output["heldout"]) == total - 4 and output["heldout"]
    assert any("[전화번호]" in t for t in output["train"] + output["heldout"])
    assert (tmp_path / "w" / "summary.md").read_text().count("|") > 10
    assert list((tmp_path / "w" / "dropped" / "script").glob("*.jsonl.gz"))
    # a rerun skips the completed tasks and leaves the same output
    again = prepare(corpus, cfg, tmp_path / "w")
    assert again["documents_kept"] == summary["documents_kept"] and read_output(tmp_path / "w") == output


def test_only_confirmed_candidates_are_removed(tmp_path):
    """With one hash per band nearly every pair of similar documents collides: pages sharing a header and stock lines
    (Jaccard about 0.3) become candidates, and only the real near copy (Jaccard above 0.5) is removed."""
    rng = random.Random(5)
    header = "[영화] 바람의 노래 관객 리뷰\n작성자 님의 리뷰 · 이 리뷰가 도움이 되었나요? 공감 비공감 · 신고하기\n"
    pages = [header + "\n".join(rng.sample(KOREAN_LINES, 4)) + f"\n{i}페이지 끝." for i in range(6)]
    copy = edit_words(pages[0], 0.05, rng)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": f"p{i}"}, ensure_ascii=False) for i, t in enumerate([*pages, copy])),
        encoding="utf-8",
    )
    cfg = PrepareSection(tasks=1, workers=1, minhash_rows=1, minhash_bands=20, dedup_exact=False, quality_filter=False)
    summary = prepare(CorpusSection(inputs=[CorpusInput(path=str(folder))], heldout_fraction=0.0), cfg, tmp_path / "w")
    pairs = summary["near_duplicates"]
    assert pairs["candidate"] > pairs["confirmed"] >= 1 and pairs["rejected"] > 0
    assert summary["dropped_by_reason"] == {"near_duplicate": 1}
    kept = read_output(tmp_path / "w")["train"]
    assert len(kept) == 6 and all(p in kept for p in pages[1:])


def test_a_large_group_of_unrelated_documents_is_screened_by_signature_not_compared_pair_by_pair(tmp_path):
    """A band group of 300 documents that share only a footer (their band minima fell in it) and one real near copy:
    the signatures screen out the unrelated pairs, the copy is still confirmed, and a pair colliding again in a later
    band is not compared twice."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    from redwhale.corpus.dedup import FindNearDuplicates

    rng = np.random.default_rng(0)
    hashes = 128
    signatures = rng.integers(0, 2**32, size=(300, hashes), dtype=np.uint64).astype(np.uint32)
    signatures[1, : hashes * 3 // 4] = signatures[0, : hashes * 3 // 4]  # doc 1 is a near copy of doc 0
    shingles = [np.sort(rng.choice(10**6, 400, replace=False)).astype(np.uint32) for _ in range(300)]
    shingles[1] = np.sort(np.concatenate([shingles[0][:300], np.arange(2 * 10**6, 2 * 10**6 + 50)])).astype(np.uint32)

    class Store:
        exact = 0

        def signatures(self, members):
            return signatures[members[:, 1]]

        def get(self, rank, doc):
            Store.exact += 1
            return shingles[doc]

    step = FindNearDuplicates(
        str(tmp_path), str(tmp_path), str(tmp_path), MinhashConfig(num_buckets=32, hashes_per_bucket=4)
    )
    group = np.column_stack([np.zeros(300, np.uint32), np.arange(300, dtype=np.uint32)])
    checked: dict = {}
    assert step._confirm(group, Store(), checked) == [(0, 0, 0, 1)]
    assert Store.exact <= 10  # 300 * 299 / 2 pairs without the screen
    again = Store.exact
    assert step._confirm(group[::-1].copy(), Store(), checked) == [(0, 1, 0, 0)]
    assert Store.exact == again


def test_band_groups_find_every_shared_signature():
    from redwhale.corpus.dedup import band_groups

    record = np.dtype([("h0", "<u8"), ("doc", "<u4")])
    task0 = np.array([(1, 0), (5, 1), (7, 2)], dtype=record)
    task1 = np.array([(5, 0), (7, 3), (9, 4)], dtype=record)
    groups = sorted(sorted(map(tuple, g.tolist())) for g in band_groups([task0, task1], 1))
    assert groups == [[(0, 1), (1, 0)], [(0, 2), (1, 3)]]


def test_ray_executor_gives_the_local_executors_output(tmp_path, raw_corpus):
    """The same pipeline on a local Ray cluster (datatrove's RayPipelineExecutor): same drops, same documents."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray>=2.40')")
    folder, _ = raw_corpus
    corpus = CorpusSection(inputs=[CorpusInput(path=str(folder))], heldout_fraction=0.2)
    local = prepare(corpus, PrepareSection(tasks=2, workers=1), tmp_path / "local")
    options = {"cpus_per_task": 1, "mem_per_cpu_gb": 1}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = prepare(corpus, PrepareSection(tasks=2, executor="ray", executor_options=options), tmp_path / "ray")
    finally:
        ray.shutdown()
    for key in ("documents_in", "documents_kept", "dropped_by_reason", "near_duplicates", "pii_masked"):
        assert remote[key] == local[key], key
    assert read_output(tmp_path / "ray") == read_output(tmp_path / "local")
