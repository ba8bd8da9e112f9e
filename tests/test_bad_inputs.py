"""Bad input through the real command line: each is one line on stderr (``error: ...``, no traceback) or a counted
skip, and nothing is left half-written."""

from __future__ import annotations

import errno
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import KOREAN_LINES, tiny_config
from redwhale.cli import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def korean_jsonl(path, extra: bytes = b""):
    rows = [json.dumps({"text": f"{line} {i}번"}, ensure_ascii=False) for i in range(30) for line in KOREAN_LINES]
    path.write_bytes(("\n".join(rows) + "\n").encode() + extra)
    return path


def test_invalid_utf8_and_json_of_the_wrong_shape_are_counted(tmp_path, capsys):
    corpus = korean_jsonl(tmp_path / "ko.jsonl", b'{"text": "\xff\xfe"}\n[1, 2]\n{"body": "x"}\n"just a string"\n')
    code, out, err = run(capsys, "-q", "prepare", "--corpus", corpus, "--out", tmp_path / "w", "--tasks", 1)
    assert code == 0, err
    stats = json.loads((tmp_path / "w" / "stats.json").read_text())["summary"]
    assert stats["malformed_by_reason"] == {
        "invalid UTF-8": 1,
        "not a JSON object": 2,
        "no string field 'text'": 1,
    }
    assert "4 malformed input lines skipped" in out


def test_a_ten_megabyte_line_is_dropped_by_the_length_rule_not_fatal(tmp_path, capsys):
    huge = json.dumps({"text": "가나다라마바사 " * 1_300_000}, ensure_ascii=False).encode() + b"\n"
    assert len(huge) > 10_000_000
    corpus = korean_jsonl(tmp_path / "ko.jsonl", huge)
    code, _, err = run(capsys, "-q", "prepare", "--corpus", corpus, "--out", tmp_path / "w", "--tasks", 1)
    assert code == 0, err
    stats = json.loads((tmp_path / "w" / "stats.json").read_text())["summary"]
    assert sum(stats["dropped_by_reason"].values()) >= 1 and stats["documents_in"] == 30 * len(KOREAN_LINES) + 1


def test_a_parquet_file_without_the_text_column(tmp_path, capsys):
    pq.write_table(pa.table({"body": ["안녕하세요"] * 3}), tmp_path / "data.parquet")
    code, _, err = run(capsys, "-q", "prepare", "--corpus", tmp_path / "data.parquet", "--out", tmp_path / "w")
    one_line_error(code, err, "no column 'text'", "body")
    assert not (tmp_path / "w").exists()


def test_an_hf_dataset_that_does_not_exist_offline(tmp_path, capsys):
    code, _, err = run(
        capsys, "-q", "prepare", "--corpus", "no-such-user/no-such-set", "--format", "hf", "--out", tmp_path / "w"
    )
    one_line_error(code, err, "cannot open the Hugging Face dataset 'no-such-user/no-such-set'")


def test_a_tokenizer_folder_missing_its_files(tmp_path, capsys, tied_llama_dir):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text("{}")
    code, _, err = run(capsys, "-q", "model", "extend", "--base", tied_llama_dir, "--tokenizer", tmp_path / "tok",
                       "--out", tmp_path / "m", "--init", "mean")  # fmt: skip
    one_line_error(code, err, "not a usable tokenizer folder")
    assert not (tmp_path / "m").exists()
    code, _, err = run(
        capsys,
        "-q",
        "tokenizer",
        "merge",
        "--base",
        tied_llama_dir,
        "--new",
        tmp_path / "tok",
        "--out",
        tmp_path / "m2",
    )
    one_line_error(code, err, "has no tokenizer.json")


def test_a_model_folder_with_a_truncated_safetensors_file(tmp_path, capsys, tied_llama_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tied_llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run(capsys, "-q", "eval", "--model", broken, "--out", tmp_path / "r.json", "--benchmarks", "off")
    one_line_error(code, err, "truncated or corrupt")
    assert not (tmp_path / "r.json").exists()


def test_a_config_with_a_wrong_type_in_every_section(tmp_path, capsys):
    bad = {
        "seed": "zero",
        "model": {"trust_remote_code": "yes"},
        "corpus": {"heldout_fraction": "a tenth"},
        "english": {"inputs": "en.jsonl"},
        "prepare": {"tasks": 1.5},
        "tokenizer": {"sizes": "8000"},
        "extend": {"calibration_chars": "many"},
        "train": {"sequence_length": "long"},
        "eval": {"shots": 0},
        "export": {"gguf": "f16"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(bad))
    code, _, err = run(capsys, "config", "validate", path)
    one_line_error(code, err, "10 problems")
    for field in ("seed", "model.trust_remote_code", "corpus.heldout_fraction", "english.inputs", "prepare.tasks",
                  "tokenizer.sizes", "extend.calibration_chars", "train.sequence_length", "eval.shots", "export.gguf"):  # fmt: skip
        assert field in err


def test_a_full_disk_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    from redwhale.core import io

    monkeypatch.setattr(io.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        io.atomic_write_json(target, {"new": 1})
    monkeypatch.undo()
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    # and through the command line: one line, and no table
    for name in ("base", "adapted"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"label": name, "korean_bpb": 1.0}))
    monkeypatch.setattr(io.os, "write", full)
    code, _, err = run(capsys, "eval", "compare", tmp_path / "base.json", tmp_path / "adapted.json",
                       "--out", tmp_path / "table.md")  # fmt: skip
    monkeypatch.undo()
    one_line_error(code, err, "No space left on device")
    assert not (tmp_path / "table.md").exists() and not list(tmp_path.glob(".table.md*"))


def test_a_read_only_run_directory(tmp_path, capsys, tied_llama_dir, monkeypatch):
    raw = tiny_config(tmp_path, tied_llama_dir)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(raw))
    real_mkdir = type(tmp_path).mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(raw["run_dir"]):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    code, _, err = run(capsys, "-q", "run", config)
    one_line_error(code, err, "Read-only file system", raw["run_dir"])
