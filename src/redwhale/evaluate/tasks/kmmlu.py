"""KMMLU (Son et al., arXiv 2402.11548): 45 subjects of Korean expert exams, four choices each, through
lm-evaluation-harness's own ``kmmlu_<subject>`` tasks (multiple choice over A-D, accuracy).

Names: ``kmmlu`` (every subject), ``kmmlu_<subject>`` (one; the harness's names, e.g. ``kmmlu_accounting``). Data
comes from the Hub (``HAERAE-HUB/KMMLU``) or, with ``eval.data``, from local CSV files in that repository's layout:
``<Subject>-dev.csv`` (few-shot examples) and ``<Subject>-test.csv``, in the folder or its ``data/`` subfolder, with
the columns ``question, answer, A, B, C, D`` (``answer`` 1-4). The ``validation`` split scores the dev file.
"""

from __future__ import annotations

import csv
import difflib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from redwhale.core.errors import DataError
from redwhale.evaluate.harness import harness_config
from redwhale.evaluate.tasks import TaskPlugin

FIELDS = ("question", "answer", "A", "B", "C", "D")


@cache
def subjects() -> tuple[str, ...]:
    """The harness's KMMLU subject tasks, read from its task folder without importing lm-eval (empty without it)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "kmmlu" / "default"
    return tuple(sorted(p.stem for p in folder.glob("kmmlu_*.yaml")))


def owns(name: str) -> bool:
    return name == "kmmlu" or (
        name.startswith("kmmlu_") and not name.startswith(("kmmlu_direct", "kmmlu_cot", "kmmlu_hard"))
    )


def expand(name: str) -> list[str]:
    known = subjects()
    if name == "kmmlu":
        return list(known)
    if name not in known:
        near = difflib.get_close_matches(name, known, n=1)
        raise ValueError(f"unknown KMMLU subject {name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return [name]


def _file(folder: Path, subject: str, split: str) -> Path | None:
    for candidate in (folder / f"{subject}-{split}.csv", folder / "data" / f"{subject}-{split}.csv"):
        if candidate.is_file():
            return candidate
    return None


def _check(path: Path) -> None:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        for number, row in enumerate(reader, start=2):
            if row["answer"].strip() not in ("1", "2", "3", "4"):
                raise DataError(f"{path}:{number}: answer must be 1, 2, 3 or 4, got {row['answer']!r}")


def local_config(task: str, folder: Path, split: str) -> dict[str, Any]:
    """The harness's config of ``task`` with its data source replaced by the local CSV files."""
    config = harness_config(task, "kmmlu")
    subject = config["dataset_name"]
    scored = _file(folder, subject, "test" if split == "test" else "dev")
    if scored is None:
        raise DataError(f"KMMLU {task}: no {subject}-{'test' if split == 'test' else 'dev'}.csv in {folder}")
    files = {"test": str(scored)}
    dev = _file(folder, subject, "dev")
    if dev is not None:
        files["dev"] = str(dev)
    for path in {scored, dev} - {None}:
        _check(path)
    config.update(dataset_path="csv", dataset_name=None, dataset_kwargs={"data_files": files}, test_split="test")
    config["fewshot_split"] = "dev" if dev is not None else None
    return config


def specs(names: list[str], data: Path | None, split: str) -> list[Any]:
    if data is None:
        return list(names)
    return [local_config(name, Path(data), split) for name in names]


PLUGIN = TaskPlugin(name="kmmlu", folder="kmmlu", owns=owns, expand=expand, specs=specs)
