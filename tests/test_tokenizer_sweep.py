"""The vocabulary sweep, the tokenizer commands end to end, and bad input."""

import json
import random
from itertools import pairwise

import pytest

from helpers import ENGLISH_LINES, KOREAN_LINES
from redwhale.cli import main
from redwhale.config.schema import CorpusInput, TokenizerSection
from redwhale.core.errors import DataError, TokenizerError
from redwhale.tokenizer.commands import sweep_command, train_command
from redwhale.tokenizer.sweep import SweepRow, knee


def write_jsonl(path, texts, bad_lines=()):
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        for line in bad_lines:
            handle.write(line + "\n")
    return path


@pytest.fixture(scope="module")
def korean_jsonl(tmp_path_factory):
    rng = random.Random(1)
    words = sorted({w for line in KOREAN_LINES for w in line.split()})
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(1500)]
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "ko.jsonl", docs + ENGLISH_LINES)


def row(size, rec, ric):
    return SweepRow(size, 0, 0, rec, ric, 0.0, 0, 1.0, 1.0, {})


def test_knee_is_the_point_farthest_below_the_chord():
    rows = [row(8, 1.1, 0.40), row(12, 1.2, 0.26), row(16, 1.3, 0.24), row(20, 1.4, 0.23), row(24, 1.5, 0.225)]
    assert knee(rows) == 12
    rows = [row(8, 1.1, 0.40), row(12, 1.2, 0.35), row(16, 1.3, 0.30), row(20, 1.4, 0.25)]
    assert knee(rows) in (8, 12, 16, 20)  # a straight line has no knee; any choice is on the chord


def test_sweep_writes_its_table_and_plot(tmp_path, korean_jsonl, bpe_tokenizer_dir):
    section = TokenizerSection(sizes=[400, 600, 800, 1000], min_frequency=1)
    result = sweep_command(
        str(bpe_tokenizer_dir), [CorpusInput(path=str(korean_jsonl))], section, tmp_path / "s", heldout_fraction=0.1
    )
    rows = result["rows"]
    assert [r["size"] for r in rows] == [400, 600, 800, 1000]
    assert all(a["rec"] < b["rec"] for a, b in pairwise(rows))
    assert all(a["ric"] >= b["ric"] for a, b in pairwise(rows))
    assert rows[-1]["ric"] < 0.5 and rows[-1]["chars_per_token"] > rows[0]["chars_per_token"]
    assert result["chosen_size"] in (400, 600, 800, 1000)
    assert all(r["new_token_frequency"]["mean"] > r["new_token_frequency"]["q10"] for r in rows)
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (tmp_path / "s" / name).stat().st_size > 100
    assert (tmp_path / "s" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert result["input"]["documents"] == 1500 + len(ENGLISH_LINES)


def test_malformed_lines_are_counted_and_the_run_goes_on(tmp_path, korean_jsonl, bpe_tokenizer_dir):
    corpus = tmp_path / "mixed.jsonl"
    corpus.write_bytes(korean_jsonl.read_bytes() + b'{"text": "\xff\xfe broken"}\nnot json\n[1, 2]\n{"body": "x"}\n')
    report = train_command(
        str(bpe_tokenizer_dir),
        [CorpusInput(path=str(corpus))],
        TokenizerSection(min_frequency=1),
        500,
        tmp_path / "tok",
    )
    assert report["input"]["malformed"] == {
        "invalid UTF-8": 1,
        "invalid JSON": 1,
        "not a JSON object": 1,
        "no string field 'text'": 1,
    }
    assert report["input"]["examples"][0].endswith(f"mixed.jsonl:{1500 + len(ENGLISH_LINES) + 1}: invalid UTF-8")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_empty_corpus_is_refused(tmp_path, bpe_tokenizer_dir):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="empty"):
        train_command(str(bpe_tokenizer_dir), [CorpusInput(path=str(empty))], TokenizerSection(), 500, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_corpus_without_korean_is_refused(tmp_path, bpe_tokenizer_dir):
    english = write_jsonl(tmp_path / "en.jsonl", ENGLISH_LINES * 5)
    with pytest.raises(DataError, match="no hangul text"):
        train_command(str(bpe_tokenizer_dir), [CorpusInput(path=str(english))], TokenizerSection(), 500, tmp_path / "t")


def test_a_size_that_adds_nothing_is_refused(tmp_path, bpe_tokenizer_dir):
    known = write_jsonl(tmp_path / "known.jsonl", [f"{KOREAN_LINES[0]} {i}" for i in range(200)])  # the base knows it
    with pytest.raises(TokenizerError, match="adds no token"):
        sweep_command(
            str(bpe_tokenizer_dir),
            [CorpusInput(path=str(known))],
            TokenizerSection(sizes=[258, 300], min_frequency=1),
            tmp_path / "s",
            heldout_fraction=0.3,
        )


def test_missing_corpus_file_is_an_error(tmp_path, bpe_tokenizer_dir):
    with pytest.raises(DataError, match="not found"):
        train_command(
            str(bpe_tokenizer_dir),
            [CorpusInput(path=str(tmp_path / "nope.jsonl"))],
            TokenizerSection(),
            500,
            tmp_path / "t",
        )


def test_cli_train_merge_sweep(tmp_path, capsys, korean_jsonl, bpe_tokenizer_dir):
    base = str(bpe_tokenizer_dir)
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--base",
                base,
                "--corpus",
                str(korean_jsonl),
                "--size",
                "600",
                "--min-frequency",
                "1",
                "--out",
                str(tmp_path / "ko"),
            ]
        )
        == 0
    )
    assert (
        main(["tokenizer", "merge", "--base", base, "--new", str(tmp_path / "ko"), "--out", str(tmp_path / "merged")])
        == 0
    )
    report = json.loads((tmp_path / "merged" / "merge_report.json").read_text())
    assert report["audit"]["dead_tokens"] == 0 and report["merged_size"] % 64 == 0
    assert (
        main(
            [
                "tokenizer",
                "sweep",
                "--base",
                base,
                "--corpus",
                str(korean_jsonl),
                "--sizes",
                "400,700",
                "--out",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "knee:" in out and (tmp_path / "sweep" / "sweep.png").is_file()
    assert (
        main(
            [
                "tokenizer",
                "sweep",
                "--base",
                base,
                "--corpus",
                str(korean_jsonl),
                "--sizes",
                "4k",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--sizes" in capsys.readouterr().err


def test_auto_size_takes_the_largest_size_the_budget_trains_past_the_knee():
    from redwhale.tokenizer.adapt import choose_size

    # mean frequency per training token of each size's new tokens: larger sizes have rarer tokens
    result = {
        "chosen_size": 2000,  # the knee
        "rows": [{"size": s, "new_token_frequency": {"mean": 1 / s}} for s in (500, 2000, 8000)],
    }
    rule = TokenizerSection(sizes=[500, 2000, 8000], auto_sizes=[], min_occurrences=4)
    large = choose_size(result, rule, 8000 * 4)  # the largest size's tokens reach 4 occurrences: past the knee
    assert large["size"] == 8000 and "the knee: 2,000" in large["why"] and "on average" in large["why"]
    small = choose_size(result, rule, 2000 * 4)
    assert small["size"] == 2000 and "larger ones are too many" in small["why"]
    assert small["expected_occurrences"] == {"500": 16.0, "2000": 4.0, "8000": 1.0}
    assert choose_size(result, rule, 1000 * 4)["size"] == 500
    assert choose_size(result, rule, 10)["size"] == 500  # nothing reaches the threshold: the smallest
    fixed = TokenizerSection(sizes=[500, 2000, 8000], size=2000)
    assert choose_size(result, fixed, 10**9)["size"] == 2000  # a size the user sets is kept
    assert choose_size(result, rule.model_copy(update={"size": "knee"}), 10**9)["size"] == 2000  # the paper's rule


def test_auto_may_take_its_larger_sizes_and_a_quantile_reads_unseen_tokens_as_zero():
    from redwhale.tokenizer.adapt import choose_size

    # 16000 is one of auto's sizes past the sweep; most of its new tokens never occur in the held-out text
    rows = [
        {"size": 2000, "new_token_frequency": {"mean": 1 / 2000, "q50": 1 / 4000}},
        {"size": 8000, "new_token_frequency": {"mean": 1 / 8000, "q50": 1 / 16000}},
        {"size": 16000, "new_token_frequency": {"mean": 1 / 16000, "q50": 0.0}},
    ]
    result = {"chosen_size": 2000, "rows": rows}
    rule = TokenizerSection(sizes=[2000, 8000], auto_sizes=[16000], min_occurrences=1)
    assert choose_size(result, rule, 16000)["size"] == 16000
    assert choose_size(result, rule, 15999)["size"] == 8000  # 16000's tokens fall under 1 occurrence on average
    by_median = rule.model_copy(update={"occurrence_quantile": 0.5})
    chosen = choose_size(result, by_median, 10**9)
    assert chosen["size"] == 8000 and "at the 50% quantile" in chosen["why"]


def test_auto_measures_sizes_below_the_sweep_only_when_no_swept_size_qualifies():
    from redwhale.tokenizer.adapt import smaller_sizes_if_needed

    rows = [{"size": s, "new_token_frequency": {"mean": 1 / s}} for s in (2000, 8000)]
    rule = TokenizerSection(sizes=[2000, 8000], auto_sizes=[], min_occurrences=4)
    assert smaller_sizes_if_needed(rule, 8000 * 4)(rows, 8000) == []  # the knee qualifies
    assert smaller_sizes_if_needed(rule, 2000 * 4)(rows, 8000) == []  # a smaller swept size does
    assert smaller_sizes_if_needed(rule, 10)(rows, 8000) == [1000, 500]  # none does: halve down to 500


def test_sweep_measures_the_sizes_more_sizes_asks_for(tmp_path, korean_jsonl, bpe_tokenizer_dir):
    from redwhale.tokenizer.sweep import sweep

    texts = [json.loads(line)["text"] for line in korean_jsonl.read_text(encoding="utf-8").splitlines()]
    asked = []

    def more(rows, knee):
        asked.append(([r["size"] for r in rows], knee))
        return [400, 800]  # 800 is measured already

    section = TokenizerSection(sizes=[800, 1000], min_frequency=1)
    result = sweep(str(bpe_tokenizer_dir), texts[100:], section, "hangul", tmp_path / "s", 0, texts[:100],
                   extra_sizes=[10**6], more_sizes=more)  # fmt: skip
    # 10**6 (as auto's larger sizes on a small corpus): more than the text trains, left out rather than repeating it
    assert asked == [([800, 1000], result["chosen_size"])]
    assert [r["size"] for r in result["rows"]] == [400, 800, 1000]
    assert result["swept_sizes"] == [800, 1000] and result["chosen_size"] in (800, 1000)
