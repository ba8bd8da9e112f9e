"""SIGKILL in every phase: a run killed in prepare (after a task), the tokenizer sweep, the init comparison,
training (mid-stage), the benchmarks and the report, rerun each time, ends with the outputs of a run never
interrupted; ``redwhale status`` tells where the killed run stands; the periodic log lines of a run whose output is
not a terminal."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import tiny_config, write_kobest

pytestmark = pytest.mark.slow


def _progress(folder: Path) -> dict:
    try:
        return json.loads((folder / "_progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _completions(folder: Path) -> int:
    return len(list(folder.iterdir())) if folder.is_dir() else 0


KILL_POINTS = [
    ("prepare", lambda r: _completions(r / "prepare.partial" / "logs" / "1-filter" / "completions") >= 1),
    ("tokenizer", lambda r: _progress(r / "tokenizer.partial").get("what") == "vocabulary sweep"),
    ("extend", lambda r: _progress(r / "extend.partial").get("what") == "calibration"),
    (
        "train",
        lambda r: (
            (r / "train.partial" / "checkpoints").is_dir()
            and any(p.name.startswith("01-") for p in (r / "train.partial" / "checkpoints").iterdir())
        ),
    ),
    ("eval", lambda r: str(_progress(r / "eval.partial").get("what", "")).endswith("benchmarks")),
    ("report", lambda r: (r / "report.partial").is_dir()),
]


def _config(tmp_path: Path, model: Path, run_dir: Path) -> Path:
    raw = tiny_config(tmp_path, model, documents=400)
    raw["run_dir"] = str(run_dir)
    raw["prepare"].update(tasks=2, workers=1)
    raw["tokenizer"]["sizes"] = [400, 500, 600, 700, 800, 900]
    raw["train"]["tokens"] = 2048
    raw["eval"].update(benchmarks="on", data=str(write_kobest(tmp_path / "kobest", n=8)), tasks=["kobest_copa"])
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "redwhale", "run", str(config)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _kill_when(config: Path, root: Path, ready) -> list[str]:
    """Start the run, SIGKILL it as soon as ``ready(root)``; return the phases that were mid-way then."""
    # its own process group, killed whole: the run's worker processes (datatrove's pool) die with it, as under a
    # scheduler's kill, instead of living on as orphans after the test
    proc = subprocess.Popen(
        _command(config), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ready(root):
        time.sleep(0.005)
    running = sorted(p.name.removesuffix(".partial") for p in root.glob("*.partial")) if root.is_dir() else []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return running


def _outputs(root: Path) -> dict:
    """What must not depend on interruptions: the cleaned corpus, the merged tokenizer, every model's weights, the
    evaluation's figures and generations, the report without its timings."""
    out: dict = {}
    for path in sorted((root / "prepare" / "output").rglob("*.jsonl.gz")):
        out[str(path.relative_to(root))] = gzip.decompress(path.read_bytes())
    out["tokenizer"] = (root / "tokenizer" / "merged" / "tokenizer.json").read_text()
    out["choice"] = json.loads((root / "tokenizer" / "choice.json").read_text())
    for name in ("extend", "train"):
        out[name] = load_file(str(root / name / "model" / "model.safetensors"))
    compare = json.loads((root / "extend" / "compare" / "compare_init.json").read_text())
    out["compare"] = {k: v.get("korean_bpb") for k, v in compare["rows"].items()}
    for name in ("base", "adapted"):
        result = json.loads((root / "eval" / f"{name}.json").read_text())
        out[name] = {k: result.get(k) for k in ("korean_bpb", "english_bpb", "benchmarks", "generations")}
    stages = json.loads((root / "train" / "stages.json").read_text())
    out["stages"] = [(s["stage"], s["tokens"], s["final_loss"]) for s in stages]
    report = (root / "report" / "report.md").read_text()
    before, _, rest = report.partition("## Training")
    out["report"] = before + rest[rest.index("## Evaluation") :]  # the training table holds timings
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict) and a[key] and isinstance(next(iter(a[key].values())), torch.Tensor):
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), f"{key}: {name}"
        else:
            assert a[key] == b[key], key


def test_a_run_killed_in_every_phase_ends_like_one_never_interrupted(tmp_path, tied_llama_dir):
    reference_config = _config(tmp_path, tied_llama_dir, tmp_path / "straight")
    straight = subprocess.run(_command(reference_config), env=_env(), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # output captured (not a terminal): the training bar becomes periodic plain log lines
    assert "stage 1/4 embeddings:" in straight.stderr and " tok (" in straight.stderr and "loss=" in straight.stderr

    config = _config(tmp_path, tied_llama_dir, tmp_path / "killed")
    root = tmp_path / "killed" / "tiny"
    for phase, ready in KILL_POINTS:
        running = _kill_when(config, root, ready)
        assert running == [phase], f"meant to kill in {phase}, the run was in {running}"
        if phase == "train":
            status = subprocess.run(
                [sys.executable, "-m", "redwhale", "status", str(root)], capture_output=True, text=True, env=_env()
            )
            assert status.returncode == 0, status.stderr
            assert "train: interrupted" in status.stdout and "stage odd_layers step" in status.stdout
            assert "prepare: done" in status.stdout and "config matches" in status.stdout
            assert "eval: not started" in status.stdout
    again = subprocess.run(_command(config), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    _same(_outputs(tmp_path / "straight" / "tiny"), _outputs(root))
