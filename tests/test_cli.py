"""The command line: thin commands, one-line errors, non-zero exits."""

import subprocess
import sys

import pytest

from redwhale.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands_with_one_line_each(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("config", "model", "demo"):
        assert command in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "redwhale", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("redwhale ")


def test_config_typo_is_one_line_and_nonzero(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: t\nmodel:\n  bsae: gpt2\n")
    code, out, err = run(capsys, "config", "validate", str(cfg))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "model.bsae" in lines[0] and "'base'" in lines[0]
    assert "Traceback" not in err


def test_config_validate_and_show(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: demo\n")
    assert run(capsys, "config", "validate", str(cfg))[0] == 0
    code, out, _ = run(capsys, "config", "show", str(cfg))
    assert code == 0 and "name: demo" in out and "trust_remote_code: false" in out


def test_missing_model_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "model", "convert", "./no-such-model", "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip().count("\n") == 0 and "model not found" in err


def test_debug_shows_the_traceback(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("seed: x\n")
    with pytest.raises(Exception) as info:
        main(["--debug", "config", "validate", str(cfg)])
    assert "seed" in str(info.value)


def test_corrupt_gguf_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 20)
    code, _, err = run(
        capsys, "model", "convert", str(bad), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")
    )
    assert code == 2 and "corrupt or truncated GGUF" in err and err.strip().count("\n") == 0


def test_doctor_reports_what_a_bug_report_needs(tmp_path, capsys):
    import json

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: t\nrun_dir: {tmp_path / 'runs'}\neval:\n  data: {tmp_path / 'no-kobest'}\n")
    code, out, _ = run(capsys, "doctor", "--json", "--config", str(cfg))
    assert code == 0
    report = json.loads(out)
    for package in ("python", "torch", "transformers", "redwhale"):
        assert report["versions"][package]
    devices = report["devices"]
    assert devices["cpus"] >= 1 and isinstance(devices["cuda"], bool) and isinstance(devices["cpu_bf16"], bool)
    # the test session is offline (conftest): doctor says so and does not claim the Hub answers
    assert report["HF_HUB_OFFLINE"] is True and report["hub_reachable"] is False
    assert report["benchmark_data"] == {"path": str(tmp_path / "no-kobest"), "found": False}
    assert report["run_dir"]["writable"] is True


def test_train_plan_of_the_default_stages_on_an_untied_gpu_model(tmp_path, capsys, untied_llama_dir):
    """Stage 1 trains the new input rows and leaves an untied head frozen in bf16: the plan's emulated autocast must
    not cast the fp32 logits the fused loss writes into (it failed with a dtype error on SOLAR-10.7B)."""
    import json

    out = tmp_path / "plan.json"
    args = ["train", "plan", "--model", str(untied_llama_dir), "--sequence-length", "128", "--json", str(out)]
    code, _, err = run(capsys, *args, "--schedule", "paper")
    assert code == 0, err
    stages = json.loads(out.read_text())["stages"]
    assert [s["stage"] for s in stages][:4] == ["embeddings", "odd_layers", "even_layers", "lora"]
    assert all(s["total_gib"] > 0 for s in stages)


def test_train_plan_resolves_the_default_schedule_by_the_memory_it_is_given(tmp_path, capsys):
    """``train.schedule: auto`` plans every layer at once where each of its stages fits the memory and the paper's
    split where one does not (saying which stage needed how much); a set schedule is planned as set."""
    import json

    out = tmp_path / "plan.json"
    # a preset: its layers outweigh its rows, unlike the tiny fixtures'
    args = ["train", "plan", "--model", "smollm2-135m", "--new-tokens", "1000", "--sequence-length", "128"]
    args += ["--micro-batch-size", "1"]

    def planned(*extra: str) -> dict:
        code, _, err = run(capsys, *args, "--json", str(out), *extra)
        assert code == 0, err
        return json.loads(out.read_text())

    every = planned("--schedule", "every_layer", "--gpu-memory", "80GB")
    split = planned("--schedule", "paper", "--gpu-memory", "80GB")
    assert [s["stage"] for s in every["stages"]] == ["all_layers", "full fine-tune"]
    needs_every = max(s["total_gib"] for s in every["stages"][:-1])
    needs_split = max(s["total_gib"] for s in split["stages"][:-1])
    assert needs_every > needs_split  # every layer's gradients and optimizer state at once

    roomy = planned("--gpu-memory", f"{needs_every / 0.9 * 1.01:.6f}GiB")  # the plan keeps 10% in reserve
    assert roomy["schedule"]["schedule"] == "every_layer" and roomy["schedule"]["requested"] == "auto"
    assert [s["stage"] for s in roomy["stages"]][:1] == ["all_layers"]

    tight = planned("--gpu-memory", f"{(needs_every + needs_split) / 2 / 0.9:.6f}GiB")
    assert tight["schedule"]["schedule"] == "paper"
    assert "'all_layers'" in tight["schedule"]["why"] and "does not fit" in tight["schedule"]["why"]
    assert [s["stage"] for s in tight["stages"]][:4] == ["embeddings", "odd_layers", "even_layers", "lora"]
    assert all(s["fits"] for s in tight["stages"][:4])


def test_train_plan_plans_for_the_largest_vocabulary_the_config_can_merge(tmp_path, capsys, tied_llama_dir):
    """Without --new-tokens the plan grows the vocabulary by the most ``tokenizer.size`` can add: 80,000 with the
    default ``auto`` (a billions-of-tokens budget takes it), the set size with a fixed one."""
    import json

    from transformers import AutoConfig

    base_vocab = AutoConfig.from_pretrained(tied_llama_dir).vocab_size
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: t\ntokenizer:\n  size: 12000\n")
    for extra, expected in (([], 80_000), (["--config", str(cfg)], 12_000), (["--new-tokens", "500"], 500)):
        out = tmp_path / "plan.json"
        args = [
            "train",
            "plan",
            "--model",
            str(tied_llama_dir),
            "--cpu",
            "--sequence-length",
            "128",
            "--json",
            str(out),
        ]
        code, _, err = run(capsys, *args, *extra)
        assert code == 0, err
        plan = json.loads(out.read_text())
        assert plan["new_tokens"] == expected
        assert plan["vocab_size"] >= base_vocab + expected
