"""``redwhale run``: every phase on a tiny model, then skipping what is up to date and redoing what changed."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import KOREAN_LINES
from redwhale.config import load_config, parse_config
from redwhale.runner import phase_hashes, run

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, model: Path, lr: float = 0.01) -> dict:
    rng = random.Random(0)
    corpus = tmp_path / "ko.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for i in range(150):
            text = " ".join(rng.sample(KOREAN_LINES, 4)) + f" 문서 {i}번."
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        handle.write("{not json\n")  # counted and reported, not fatal
    stage = {"tokens": 128, "lr": lr}
    return {
        "name": "tiny",
        "run_dir": str(tmp_path / "runs"),
        "model": {"base": str(model)},
        "corpus": {"inputs": [{"path": str(corpus)}], "heldout_fraction": 0.2},
        "prepare": {"tasks": 1, "workers": 1, "dedup_near": False},
        "tokenizer": {"sizes": [400, 600, 800], "min_frequency": 1},
        "extend": {"init": "decomposition", "compare": ["mean", "decomposition"], "eval_chars": 1000},
        "train": {
            "sequence_length": 32,
            "micro_batch_size": 2,
            "checkpoint_every": 2,
            "tensorboard": False,
            "stages": [
                {"name": "embeddings", "trainable": {"embeddings": "all", "lm_head": "all"}, **stage},
                {"name": "odd_layers", "trainable": {"layers": "odd"}, **stage},
                {"name": "even_layers", "trainable": {"layers": "even"}, **stage},
                {"name": "lora", "lora": {"rank": 4, "alpha": 8}, **stage},
            ],
        },
        "eval": {"kobest": False, "korean_chars": 1000, "english_chars": 1000},
        "report": {"max_new_tokens": 4, "korean_prompts": ["대한민국은"], "english_prompts": ["The capital"]},
    }


@pytest.mark.slow
def test_run_every_phase_then_skip_then_redo_only_what_changed(tmp_path, tied_llama_dir):
    raw = tiny_config(tmp_path, tied_llama_dir)
    first = run(parse_config(raw))
    assert all(isinstance(status, dict) for status in first["phases"].values()), first["phases"]
    root = Path(first["run_dir"])
    assert (root / "train" / "model" / "model.safetensors").is_file()
    html = Path(first["report"]).read_text(encoding="utf-8")
    # self-contained: every figure inline, nothing fetched
    assert html.count("data:image/png;base64,") >= 3 and not re.search(
        r"<(img|script|link)[^>]+(src|href)=\"http", html
    )
    markdown = (root / "report" / "report.md").read_text(encoding="utf-8")
    for heading in ("## Corpus", "## Tokenizer", "## Initialisation", "## Training", "## Evaluation", "## Generations"):
        assert heading in markdown
    assert "1 malformed input line" in markdown
    evaluation = first["phases"]["eval"]
    assert evaluation["adapted_korean_bpb"] > 0 and evaluation["base_english_bpb"] > 0

    again = run(parse_config(raw))
    assert set(again["phases"].values()) == {"up to date"}

    changed = dict(raw, train=dict(raw["train"], stages=[dict(s, lr=0.02) for s in raw["train"]["stages"]]))
    third = run(parse_config(changed))
    statuses = {name: status if isinstance(status, str) else "ran" for name, status in third["phases"].items()}
    assert statuses == {
        "prepare": "up to date",
        "tokenizer": "up to date",
        "extend": "up to date",
        "train": "ran",
        "eval": "ran",
        "report": "ran",
    }


def test_a_phase_hash_follows_only_what_it_reads(tmp_path):
    base = tiny_config(tmp_path, tmp_path / "model")
    before = phase_hashes(parse_config(base))
    after = phase_hashes(parse_config(dict(base, eval=dict(base["eval"], korean_chars=1200))))
    assert [name for name in before if before[name] != after[name]] == ["eval", "report"]
    after = phase_hashes(parse_config(dict(base, tokenizer=dict(base["tokenizer"], sizes=[400, 600]))))
    assert [name for name in before if before[name] != after[name]] == [
        "tokenizer",
        "extend",
        "train",
        "eval",
        "report",
    ]


@pytest.mark.slow
def test_run_killed_in_training_continues_from_its_checkpoint(tmp_path, tied_llama_dir):
    raw = tiny_config(tmp_path, tied_llama_dir)
    raw["train"]["stages"] = [dict(s, tokens=512) for s in raw["train"]["stages"]]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    command = [sys.executable, "-m", "redwhale", "run", str(config)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs" / "tiny" / "train.partial" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(p.name.startswith("01-") for p in checkpoints.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / "tiny" / "train").exists(), "the run finished before it could be killed"
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "prepare: up to date" in again.stdout and "extend: up to date" in again.stdout
    assert "continuing training from" in again.stderr
    stages = json.loads((tmp_path / "runs" / "tiny" / "train" / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["embeddings", "odd_layers", "even_layers", "lora"]
    assert any(s["resumed_at_step"] for s in stages)


SHIPPED = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name and cfg.train.stages


def test_demo_config_is_the_paper_recipe_on_the_embedded_model():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.model.base == "smollm2-135m" and cfg.corpus.inputs[0].path == "bundled:konlpy"
    assert [s.name for s in cfg.train.stages] == ["embeddings", "odd_layers", "even_layers", "lora"]
