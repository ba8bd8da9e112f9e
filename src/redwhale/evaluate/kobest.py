"""KoBEST through lm-evaluation-harness, with the harness's own ``kobest_*`` task definitions.

The prompts, choices, metrics (accuracy, macro-F1, and ``acc_norm`` for HellaSwag), few-shot sampling (from the train
split, with the harness's seed) and batching (requests sorted by length) are the harness's, so numbers compare with
published ones. By default the data comes from the Hub (``skt/kobest_v1``); with a local folder of JSONL files in that
dataset's field layout (``<task>_<split>.jsonl``), each task's config is the harness's YAML with only its data source
replaced, and nothing touches the network. Local files are checked first, so a malformed line is an error naming the
file and line, not a failure deep inside ``datasets``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from redwhale.errors import DataError, missing_extra

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


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise missing_extra("lm-eval", "eval") from None


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


def task_specs(tasks: list[str], files: dict[str, dict[str, Any]] | None) -> list[Any]:
    """Harness task names (Hub data) or the harness's configs with local data files."""
    if files is None:
        return [f"kobest_{t}" for t in tasks]
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    index = TaskManager()._index
    specs = []
    for task in tasks:
        entry = index[f"kobest_{task}"]
        config = load_yaml(entry.yaml_path, resolve_func=True)
        data_files = {"test": str(files[task]["score"])}
        if "train" in files[task]:
            data_files["train"] = str(files[task]["train"])
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
        specs.append(config)
    return specs


def evaluate_kobest(
    model,
    tokenizer,
    tasks: list[str],
    shots: list[int],
    data_dir: Path | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Score ``model`` on each task at each number of shots; returns ``{shots: {task: metrics}}``."""
    _lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    files = local_files(data_dir, tasks, split) if data_dir else None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    out: dict[str, Any] = {}
    for k in shots:
        raw = lm_eval.simple_evaluate(
            model=lm, tasks=task_specs(tasks, files), num_fewshot=k, limit=limit, log_samples=False, bootstrap_iters=0
        )
        by_task = {}
        for task in tasks:
            metrics = raw["results"][f"kobest_{task}"]
            row = {"acc": metrics["acc,none"], "f1": metrics["f1,none"]}
            if "acc_norm,none" in metrics:
                row["acc_norm"] = metrics["acc_norm,none"]
            row["examples"] = raw["n-samples"][f"kobest_{task}"]["effective"]
            row["split"] = files[task]["scored_split"] if files else split
            by_task[task] = row
        out[str(k)] = by_task
    return out
