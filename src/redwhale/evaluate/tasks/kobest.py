"""KoBEST (BoolQ, COPA, HellaSwag, SentiNeg, WiC) through lm-evaluation-harness, with its own ``kobest_*`` tasks.

The prompts, choices, metrics (accuracy, macro-F1, and ``acc_norm`` for HellaSwag), few-shot sampling (from the train
split, with the harness's seed) and batching (requests sorted by length) are the harness's, so numbers compare with
published ones. By default the data comes from the Hub (``skt/kobest_v1``); with a local folder of JSONL files in that
dataset's field layout (``<task>_<split>.jsonl``), each task's config is the harness's YAML with only its data source
replaced, and nothing touches the network. Local files are checked first, so a malformed line is an error naming the
file and line, not a failure deep inside ``datasets``.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

from redwhale.core.errors import DataError
from redwhale.evaluate.harness import harness_config
from redwhale.evaluate.tasks import TaskPlugin

log = logging.getLogger(__name__)

#: Task -> fields each example must have (the Hugging Face dataset ``skt/kobest_v1``'s layout).
TASKS: dict[str, tuple[str, ...]] = {
    "boolq": ("paragraph", "question", "label"),
    "copa": ("premise", "question", "alternative_1", "alternative_2", "label"),
    "hellaswag": ("context", "ending_1", "ending_2", "ending_3", "ending_4", "label"),
    "sentineg": ("sentence", "label"),
    "wic": ("word", "context_1", "context_2", "label"),
}
LABELS = {"boolq": 2, "copa": 2, "hellaswag": 4, "sentineg": 2, "wic": 2}


def local_files(folder: Path, tasks: list[str], split: str) -> dict[str, dict[str, Path]]:
    """The files of each task: train (for few-shot examples, when present) and the split to score. A task without
    ``<task>_test.jsonl`` is scored on ``<task>_validation.jsonl`` when ``split`` is test (logged)."""
    if not folder.is_dir():
        raise DataError(f"KoBEST data folder not found: {folder}")
    files: dict[str, dict[str, Path]] = {}
    for task in tasks:
        if task not in TASKS:
            raise DataError(f"unknown KoBEST task {task!r}; tasks: {', '.join(TASKS)}")
        found = {s: folder / f"{task}_{s}.jsonl" for s in ("train", "validation", "test")}
        found = {s: p for s, p in found.items() if p.is_file()}
        scored = split if split in found else ("validation" if split == "test" and "validation" in found else None)
        if scored is None:
            raise DataError(f"KoBEST task {task}: no {task}_{split}.jsonl in {folder}")
        if scored != split:
            log.warning("KoBEST %s: no test split in %s, scoring the validation split", task, folder)
        files[task] = {
            "score": found[scored],
            "scored_split": scored,
            **({"train": found["train"]} if "train" in found else {}),
        }
        for path in {found[scored], *([found["train"]] if "train" in found else [])}:
            check_file(task, path)
    return files


def check_file(task: str, path: Path) -> int:
    """Every line of ``path`` is a JSON object with the task's fields and a valid integer label."""
    fields = TASKS[task]
    count = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(example, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            missing = [f for f in fields if f not in example]
            if missing:
                raise DataError(
                    f"{path}:{number}: missing field{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (KoBEST {task} needs {', '.join(fields)})"
                )
            label = example["label"]
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < LABELS[task]:
                raise DataError(f"{path}:{number}: label must be an integer in 0..{LABELS[task] - 1}, got {label!r}")
            count += 1
    if count == 0:
        raise DataError(f"{path}: no examples")
    return count


def local_config(task: str, files: dict[str, Any]) -> dict[str, Any]:
    """The harness's config of ``task`` with its data source replaced by local files."""
    config = harness_config(task, "kobest")
    data_files = {"test": str(files["score"])}
    if "train" in files:
        data_files["train"] = str(files["train"])
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": data_files},
        test_split="test",
        validation_split=None,
        training_split="train" if "train" in data_files else None,
    )
    if "train" not in data_files:
        config["fewshot_split"] = None
    return config


def expand(name: str) -> list[str]:
    """``kobest`` is the five tasks; ``kobest_<task>`` one of them."""
    if name == "kobest":
        return [f"kobest_{t}" for t in TASKS]
    task = name.removeprefix("kobest_")
    if task not in TASKS:
        near = difflib.get_close_matches(task, list(TASKS), n=1)
        hint = f"did you mean 'kobest_{near[0]}'?" if near else f"KoBEST has {', '.join(TASKS)}"
        raise ValueError(f"unknown KoBEST task {name!r} ({hint})")
    return [name]


def specs(names: list[str], data: Path | None, split: str) -> list[Any]:
    """Harness task names (Hub data) or the harness's configs with local data files."""
    if data is None:
        return list(names)
    tasks = [n.removeprefix("kobest_") for n in names]
    files = local_files(Path(data), tasks, split)
    return [local_config(f"kobest_{t}", files[t]) for t in tasks]


def owns(name: str) -> bool:
    return name == "kobest" or name.startswith("kobest_")


PLUGIN = TaskPlugin(name="kobest", folder="kobest", owns=owns, expand=expand, specs=specs)
