"""Resume after SIGKILL ends with the same weights, and 2-process DDP (gloo, CPU) matches one process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import KOREAN_LINES

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "tiny",
    "train": {
        "sequence_length": 32,
        "micro_batch_size": 2,
        "grad_accum": 2,
        "checkpoint_every": 1,
        "keep_checkpoints": 2,
        "tensorboard": False,
        "stages": [
            {"name": "embeddings", "trainable": {"embeddings": "all", "lm_head": "all"}, "tokens": 2560, "lr": 1e-2},
            {"name": "odd", "trainable": {"layers": "odd"}, "tokens": 2560, "lr": 1e-2},
            {"name": "even", "trainable": {"layers": "even"}, "tokens": 2560, "lr": 1e-2},
            {"name": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.1}, "tokens": 2560, "lr": 1e-2},
        ],
    },
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    corpus = folder / "ko.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"text": f"{line} {i}"}, ensure_ascii=False) for i in range(40) for line in KOREAN_LINES),
        encoding="utf-8",
    )
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return folder, corpus, config


def command(model, out, config, corpus, *extra):
    return [
        sys.executable,
        "-m",
        "redwhale",
        "-q",
        "train",
        "--model",
        str(model),
        "--out",
        str(out),
        "--config",
        str(config),
        "--corpus",
        str(corpus),
        *extra,
    ]


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_run_killed_mid_stage_and_resumed_ends_with_the_same_weights(setup, extended_tied_dir, dtype):
    """float32, and bf16 frozen weights (model.dtype) whose stage boundaries re-cast what is trained and frozen."""
    folder, corpus, config = setup
    if dtype != "float32":
        folder = folder / dtype
        folder.mkdir()
        config = folder / "run.yaml"
        config.write_text(yaml.safe_dump({**CONFIG, "model": {"dtype": dtype}}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        command(extended_tied_dir, folder / "straight", config, corpus), check=True, env=env, capture_output=True
    )
    killed = folder / "killed"
    proc = subprocess.Popen(
        command(extended_tied_dir, killed, config, corpus),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    target = killed / "checkpoints"
    while time.time() < deadline:
        if target.is_dir() and any(p.name.startswith("01-odd-step") for p in target.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists(), "the run finished before it could be killed"
    again = subprocess.run(command(extended_tied_dir, killed, config, corpus), env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # refuses to start over on top of checkpoints
    subprocess.run(
        command(extended_tied_dir, killed, config, corpus, "--resume"), check=True, env=env, capture_output=True
    )
    straight, resumed = weights(folder / "straight"), weights(killed)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert {t.dtype for t in resumed.values()} == {getattr(torch, dtype)}  # saved in the dtype asked for
    stages = json.loads((killed / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["embeddings", "odd", "even", "lora"]
    assert any(s["resumed_at_step"] for s in stages)


def test_two_cpu_processes_with_ddp_match_one_process(setup, extended_tied_dir):
    """``train.processes: 2`` runs the schedule under accelerate (2 gloo processes) and matches one process.

    What must match: the same global batches (each step's rank-averaged loss equals the single process's), the same
    gradients (the clipped-gradient norm of every step), and the same weights. The weights are compared under plain
    SGD, whose update is proportional to the gradient: AdamW's first steps move each element by about the learning
    rate whatever its gradient, so the last-bit differences of the two reduction orders (which depend on the CPU)
    would flip near-zero elements by a full step and prove nothing about the distributed code."""
    folder, corpus, config = setup
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = json.loads(json.dumps(CONFIG))
    # float32 products: bf16 autocast (auto on a CPU with AMX) rounds a micro-batch of 2 and one of 4 differently
    single["train"].update(micro_batch_size=4, optimizer="sgd", max_grad_norm=0.5, precision="fp32")
    single["train"]["stages"] = [dict(s, tokens=1024, lr=0.5) for s in single["train"]["stages"][:3]]
    double = json.loads(json.dumps(single))
    double["train"].update(micro_batch_size=2, processes=2)
    (folder / "single.yaml").write_text(yaml.safe_dump(single))
    (folder / "double.yaml").write_text(yaml.safe_dump(double))
    for name, cfg in (("one", "single.yaml"), ("two", "double.yaml")):
        result = subprocess.run(
            command(extended_tied_dir, folder / name, folder / cfg, corpus), env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((folder / "two" / "model" / "training_summary.json").read_text())
    assert summary["processes"] == 2
    records = {}
    for run in ("one", "two"):
        lines = (folder / run / "logs" / "metrics.jsonl").read_text().splitlines()
        records[run] = [json.loads(line) for line in lines]
    assert len(records["one"]) == len(records["two"]) == 12  # 3 stages x 1024 tokens / 256 tokens per step
    one_loss, two_loss = ([r["loss"] for r in records[k]] for k in ("one", "two"))
    assert one_loss == pytest.approx(two_loss, rel=1e-5)
    one_grad, two_grad = ([r["grad_norm"] for r in records[k]] for k in ("one", "two"))
    assert one_grad == pytest.approx(two_grad, rel=1e-4)
    start = load_file(str(extended_tied_dir / "model.safetensors"))
    one, two = weights(folder / "one"), weights(folder / "two")
    for name in one:
        moved = (one[name] - start[name]).norm()
        if name == "model.norm.weight":  # no stage trains the final norm
            assert moved == 0 and torch.equal(one[name], two[name])
            continue
        assert moved > 0, name
        assert (one[name] - two[name]).norm() <= 1e-3 * moved, name
