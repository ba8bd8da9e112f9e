"""The export phase as one function: the GGUF files and the chat vector the config asks for (none by default)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redwhale.config.schema import ExportSection
from redwhale.core.io import atomic_write_json
from redwhale.core.source import LoadOptions
from redwhale.export.chat_vector import apply_chat_vector
from redwhale.export.gguf import export_gguf
from redwhale.export.vllm import check_vllm


def export_all(
    base_spec: str,
    model_dir: Path,
    section: ExportSection,
    out: Path,
    gguf_path: Callable[[str], Path],
    chat_dir: Path,
    summary_json: Path,
    load: LoadOptions | None = None,
) -> dict[str, Any]:
    """Write what ``section`` asks for into ``out``; the summary (files, sizes, seconds) goes to ``summary_json``."""
    summary: dict[str, Any] = {"gguf": {}, "chat_vector": None, "vllm_problems": check_vllm(model_dir)}
    started = time.perf_counter()
    if section.gguf:
        for kind in section.gguf:
            summary["gguf"][kind] = export_gguf(model_dir, gguf_path(kind), kind, base_spec, load)
    if section.chat_vector is not None:
        vector = section.chat_vector
        summary["chat_vector"] = apply_chat_vector(
            vector.base or base_spec, vector.instruct, model_dir, chat_dir, vector.scale, load
        )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(summary_json, summary)
    return summary
