"""The train phase as one function: tokenise the corpus once, then run the schedule here or on every local GPU.

With ``train.processes`` above 1 (``auto``: one per local GPU) the schedule runs under ``accelerate launch`` (DDP by
default; FSDP or DeepSpeed through ``train.accelerate_config``): this process tokenises the data, writes the resolved
settings beside it, starts ``redwhale train`` on every process and waits; the model, stages and metrics land in the
same folder as a single-process run's, so the run continues with evaluation when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoTokenizer

from redwhale.config.schema import EvalSection, TrainSection
from redwhale.core.errors import RedwhaleError
from redwhale.core.io import atomic_write_text
from redwhale.core.text import heldout_after
from redwhale.corpus.bundled import python_docs_english
from redwhale.train.data import INDEX, tokenize_to_shards
from redwhale.train.loop import Trainer

log = logging.getLogger(__name__)
LAUNCH_CONFIG = "launch.yaml"


def prepare_data(
    tokenizer_dir: Path,
    korean: Iterable[str] | None,
    english: Iterable[str] | None,
    out: Path,
    trust_remote_code: bool = False,
) -> tuple[Path, Path | None]:
    """Tokenise the training texts into ``out/korean`` (and ``out/english``) unless already done."""
    korean_dir, english_dir = out / "korean", out / "english"
    needed = [(korean_dir, korean, "Korean")] + ([(english_dir, english, "English")] if english is not None else [])
    tokenizer = None
    for folder, texts, label in needed:
        if (folder / INDEX).is_file():
            continue
        if texts is None:
            raise RedwhaleError(f"no tokenised {label} data in {folder} and no text to tokenise")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=trust_remote_code)
        index = tokenize_to_shards(tokenizer, texts, folder)
        log.info("tokenised %d %s documents into %d tokens", index["documents"], label, index["tokens"])
    has_english = english is not None or (english_dir / INDEX).is_file()
    return korean_dir, english_dir if has_english else None


def local_processes(section: TrainSection) -> int:
    """How many training processes ``train.processes`` asks for on this machine."""
    if section.processes == "auto":
        return max(torch.cuda.device_count(), 1)
    return section.processes


def inside_launcher() -> bool:
    """True in a process started by ``accelerate launch`` / ``torchrun`` (which sets the world size)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_schedule(
    model_dir: Path,
    korean: Iterable[str] | None,
    english: Iterable[str] | None,
    section: TrainSection,
    work: Path,
    seed: int = 0,
    dtype: str = "auto",
    run_name: str = "redwhale",
    resume: bool = False,
    trust_remote_code: bool = False,
    english_check: list[str] | None = None,
) -> dict[str, Any]:
    """Tokenise (once) and train; the final model is written to ``work/model``. ``resume``: continue from the newest
    checkpoint in ``work`` (without it, existing checkpoints are an error). ``english_check``: the English
    ``merge_with_base: auto`` measures (default: the Python reference's held-out text after what evaluation scores
    by default)."""
    if section.merge_with_base == "auto" and english_check is None:
        english_check = heldout_after(python_docs_english(unit="paragraph"), EvalSection().english_chars,
                                      section.english_check_chars, seed, heldout_only=False)  # fmt: skip
    korean_dir, english_dir = prepare_data(model_dir, korean, english, work / "data", trust_remote_code)
    processes = local_processes(section)
    if processes > 1 and not inside_launcher():
        return launch(model_dir, section, work, seed, dtype, run_name, processes, resume, trust_remote_code)
    trainer = Trainer(
        model_dir,
        korean_dir,
        english_dir,
        section,
        work,
        seed,
        run_name,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        english_check=english_check,
    )
    return trainer.run(resume=resume)


def launch_command(work: Path, model_dir: Path, section: TrainSection, processes: int, resume: bool) -> list[str]:
    """The ``accelerate launch`` command line that trains on ``processes`` local processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if section.accelerate_config is not None:
        command += ["--config_file", str(section.accelerate_config)]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
        command += ["--mixed_precision", "no"]  # the trainer chooses its own autocast
    command += ["-m", "redwhale", *_verbosity(), "train", "--model", str(model_dir), "--out", str(work)]
    return command + ["--config", str(work / LAUNCH_CONFIG)] + (["--resume"] if resume else [])


def _verbosity() -> list[str]:
    level = logging.getLogger("redwhale").getEffectiveLevel()
    return ["--debug"] if level <= logging.DEBUG else (["-q"] if level > logging.INFO else [])


def launch(
    model_dir: Path,
    section: TrainSection,
    work: Path,
    seed: int,
    dtype: str,
    run_name: str,
    processes: int,
    resume: bool,
    trust_remote_code: bool,
) -> dict[str, Any]:
    """Run the schedule under ``accelerate launch`` on ``processes`` processes and return its summary."""
    settings = {
        "name": run_name,
        "seed": seed,
        "model": {"dtype": dtype, "trust_remote_code": trust_remote_code},
        "train": {**section.model_dump(mode="json", exclude_unset=True), "processes": 1},  # each trains in place
    }
    atomic_write_text(work / LAUNCH_CONFIG, yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    command = launch_command(work, model_dir, section, processes, resume)
    log.info("training on %d processes: %s", processes, " ".join(command))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise RedwhaleError(
            f"training on {processes} processes failed (exit status {result.returncode}); its log is above"
        )
    return json.loads((work / "model" / "training_summary.json").read_text(encoding="utf-8"))
