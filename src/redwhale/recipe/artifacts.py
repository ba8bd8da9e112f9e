"""What each phase leaves in its folder: one frozen dataclass per phase, the only place its file names are written.

A phase function returns its artifact rooted at the folder it worked in; the runner re-roots it at the committed
folder and stores its scalar fields in the phase marker, so a later run (or the report, or ``redwhale status``)
rebuilds it with :func:`load` without reading anything else. Later phases and the report take artifacts, never path
strings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redwhale.config.schema import CorpusInput

A = TypeVar("A")


@dataclass(frozen=True)
class PreparedCorpus:
    """``prepare``: the cleaned corpus, split into train and held-out shards, with counts of what was dropped."""

    root: Path
    documents_kept: int = 0

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    def split(self, name: str) -> list[CorpusInput]:
        """The cleaned shards of one split (``train`` or ``heldout``), as corpus inputs."""
        folder = self.root / "output" / name
        fmt = "parquet" if any(folder.glob("*.parquet")) else "jsonl"
        return [CorpusInput(path=str(folder), format=fmt)]


@dataclass(frozen=True)
class AdaptedTokenizer:
    """``tokenizer``: the sweep of vocabulary sizes, the size chosen and why, and the merged tokenizer."""

    root: Path
    chosen_size: int = 0
    added_tokens: int = 0

    @property
    def sweep_dir(self) -> Path:
        return self.root / "sweep"

    @property
    def sweep_json(self) -> Path:
        return self.sweep_dir / "sweep.json"

    @property
    def sweep_png(self) -> Path:
        return self.sweep_dir / "sweep.png"

    @property
    def new_tokenizer(self) -> Path:
        return self.sweep_dir / "new-tokenizer"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def merge_report(self) -> Path:
        return self.merged / "merge_report.json"

    @property
    def choice(self) -> Path:
        return self.root / "choice.json"


@dataclass(frozen=True)
class ExtendedModel:
    """``extend``: the init comparison (when asked) and the model grown to the merged vocabulary."""

    root: Path
    init: str = ""
    comparison: str = ""  # why the init comparison ran or was skipped

    @property
    def compare_dir(self) -> Path:
        return self.root / "compare"

    @property
    def compare_json(self) -> Path:
        return self.compare_dir / "compare_init.json"

    @property
    def model(self) -> Path:
        return self.root / "model"


@dataclass(frozen=True)
class TrainedModel:
    """``train``: the adapted model, the stages' summaries, per-step metrics and checkpoints."""

    root: Path
    tokens: int = 0

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def stages_json(self) -> Path:
        return self.root / "stages.json"

    @property
    def metrics(self) -> Path:
        return self.root / "logs" / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def summary_json(self) -> Path:
        return self.model / "training_summary.json"


@dataclass(frozen=True)
class Evaluation:
    """``eval``: base and adapted model on the same text and tasks."""

    root: Path
    benchmarks_ran: bool = False
    benchmarks_reason: str = ""

    @property
    def base_json(self) -> Path:
        return self.root / "base.json"

    @property
    def adapted_json(self) -> Path:
        return self.root / "adapted.json"

    @property
    def compare_md(self) -> Path:
        return self.root / "compare.md"


@dataclass(frozen=True)
class Exported:
    """``export``: GGUF files and the chat-vector model, when the config asks for them."""

    root: Path
    gguf_types: tuple[str, ...] = ()
    chat_vector: bool = False

    def gguf(self, kind: str) -> Path:
        return self.root / f"model-{kind}.gguf"

    @property
    def chat_model(self) -> Path:
        return self.root / "chat"

    @property
    def summary_json(self) -> Path:
        return self.root / "export.json"


@dataclass(frozen=True)
class Report:
    """``report``: one self-contained HTML page, its Markdown twin and the plots."""

    root: Path
    partial: bool = False

    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def generations(self) -> Path:
        return self.root / "generations.json"


def fields_of(artifact: Any) -> dict[str, Any]:
    """The scalar fields of an artifact (what the marker stores), without its root."""
    return {
        f.name: list(v) if isinstance(v := getattr(artifact, f.name), tuple) else v
        for f in dataclasses.fields(artifact)
        if f.name != "root"
    }


def load(kind: type[A], root: Path, stored: dict[str, Any]) -> A:
    """Rebuild an artifact of ``kind`` rooted at ``root`` from the fields a marker stored."""
    names = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
    values = {}
    for name, value in stored.items():
        if name in names and name != "root":
            values[name] = tuple(value) if isinstance(value, list) else value
    return kind(root=root, **values)


def rerooted(artifact: A, root: Path) -> A:
    return dataclasses.replace(artifact, root=root)


def read_json(path: Path) -> Any:
    """A JSON file of an artifact, or None when it is not there (a phase that wrote no such file)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
