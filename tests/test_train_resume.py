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


def test_a_run_killed_mid_stage_and_resumed_ends_with_the_same_weights(setup, extended_tied_dir):
    folder, corpus, config = setup
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
    stages = json.loads((killed / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["embeddings", "odd", "even", "lora"]
    assert any(s["resumed_at_step"] for s in stages)


def test_two_cpu_processes_with_ddp_match_one_process(setup, extended_tied_dir):
    folder, corpus, config = setup
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = json.loads(json.dumps(CONFIG))
    single["train"]["micro_batch_size"] = 4
    for s in single["train"]["stages"]:
        s["tokens"] = 1024
        s.pop("lora", None) if s["name"] == "lora" else None
    single["train"]["stages"] = single["train"]["stages"][:3]
    double = json.loads(json.dumps(single))
    double["train"]["micro_batch_size"] = 2
    (folder / "single.yaml").write_text(yaml.safe_dump(single))
    (folder / "double.yaml").write_text(yaml.safe_dump(double))
    subprocess.run(
        command(extended_tied_dir, folder / "one", folder / "single.yaml", corpus),
        check=True,
        env=env,
        capture_output=True,
    )
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "redwhale",
        "-q",
        "train",
        "--model",
        str(extended_tied_dir),
        "--out",
        str(folder / "two"),
        "--config",
        str(folder / "double.yaml"),
        "--corpus",
        str(corpus),
    ]
    result = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((folder / "two" / "model" / "training_summary.json").read_text())
    assert summary["processes"] == 2
    # the same global batches: the rank-averaged loss of each step equals the single process's
    losses = []
    for run in ("one", "two"):
        lines = (folder / run / "logs" / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(line)["loss"] for line in lines])
    assert len(losses[0]) == len(losses[1]) == 12  # 3 stages x 1024 tokens / 256 tokens per step
    assert losses[0][:8] == pytest.approx(losses[1][:8], rel=1e-4)
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
    # and the weights end where one process took them. AdamW moves an element by about the learning rate whatever
    # the size of its gradient, so rounding differences flip a few near-zero elements: compare whole tensors.
    start = load_file(str(extended_tied_dir / "model.safetensors"))
    one, two = weights(folder / "one"), weights(folder / "two")
    for name in one:
        moved = (one[name] - start[name]).norm()
        if name == "model.norm.weight":  # no stage trains the final norm
            assert moved == 0 and torch.equal(one[name], two[name])
            continue
        assert moved > 0, name
        assert (one[name] - two[name]).norm() <= 0.05 * moved, name
