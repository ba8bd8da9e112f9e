"""Atomic writes, run directories and phase markers."""

import json

import pytest

from redwhale.core.io import atomic_dir, atomic_write_json, stable_hash
from redwhale.recipe.rundir import RunDir


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out" / "data.json"
    atomic_write_json(target, {"한국어": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == {"한국어": 1}
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = atomic_write_json(tmp_path / "atomic.json", {})
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_atomic_dir_keeps_the_old_result_when_the_block_fails(tmp_path):
    final = tmp_path / "phase"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("interrupted")
    assert (final / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase"]


def test_stable_hash_ignores_key_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_phase_commit_skip_and_redo(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_done("tokenizer", "h1")
    work = run.partial("tokenizer", "h1")
    (work / "tokenizer.json").write_text("{}")
    run.commit("tokenizer", "h1", {"tokens": 3})
    assert run.is_done("tokenizer", "h1")
    assert not run.is_done("tokenizer", "h2")
    assert run.marker("tokenizer").summary == {"tokens": 3}
    assert (run.path("tokenizer") / "tokenizer.json").is_file()
    assert not (tmp_path / "run" / "tokenizer.partial").exists()


def test_partial_work_survives_a_restart_only_with_the_same_hash(tmp_path):
    run = RunDir(tmp_path / "run")
    (run.partial("train", "h1") / "checkpoint").write_text("step 10")
    assert (run.partial("train", "h1") / "checkpoint").read_text() == "step 10"
    assert not (run.partial("train", "h2") / "checkpoint").exists()


def test_a_phase_without_marker_is_not_done(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path("prepare").mkdir(parents=True)
    assert run.marker("prepare") is None and not run.is_done("prepare", "x")


def test_train_status_eta_counts_the_wall_clock_cap(tmp_path):
    """1,000 tokens of 10,000 trained at 100 tokens/s: 90 s left by the tokens, 20 s left of a 30 s cap."""
    from redwhale.config.schema import RunConfig
    from redwhale.recipe.status import train_detail

    (tmp_path / "logs").mkdir()
    record = {"stage": "s", "stage_index": 0, "step": 10, "tokens": 1000, "loss": 2.0, "tokens_per_s": 100.0}
    (tmp_path / "logs" / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    tokens_only = RunConfig.model_validate({"train": {"tokens": 10_000}})
    assert train_detail(tmp_path, tokens_only)["eta_s"] == pytest.approx(90.0)
    capped = RunConfig.model_validate({"train": {"tokens": 10_000, "seconds": 30}})
    assert train_detail(tmp_path, capped)["eta_s"] == pytest.approx(20.0)
