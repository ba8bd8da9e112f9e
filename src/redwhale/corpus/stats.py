"""What the corpus pipeline counted: datatrove's merged stats of every stage, summed into documents in and out, drops
by reason, personal data masked, normalisation changes, split sizes and malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datatrove.utils.stats import PipelineStats


def _stage_stats(stage: Path) -> PipelineStats | None:
    """The stats of every task of one stage, summed from the per-task files. datatrove's merged ``stats.json`` only
    covers the tasks run by the last invocation, so after a resume it would lose the tasks that were skipped."""
    tasks = sorted((stage / "stats").glob("*.json"))
    if not tasks:
        return None
    return sum((PipelineStats.from_json(json.loads(t.read_text())) for t in tasks), start=PipelineStats())


def read_stats(logs: Path) -> dict[str, Any]:
    """datatrove's stats of every stage, summed over its tasks, as ``{stage: {step: {counter: value}}}``."""
    out: dict[str, Any] = {}
    for stage in sorted(p for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []:
        merged = _stage_stats(stage)
        if merged is None:
            continue
        steps = {}
        for entry in json.loads(merged.to_json()):
            counters = {}
            for key, value in entry.get("stats", {}).items():
                counters[key] = value.get("total", value) if isinstance(value, dict) else value
            steps[entry["name"]] = counters
        out[stage.name] = steps
    return out


NORMALISATION_COUNTERS = (
    "mojibake_fixed",
    "html_cleaned",
    "controls_removed",
    "stray_jamo_mapped",
    "boilerplate_lines_removed",
    "template_lines_removed",
)


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """Documents in and out, drops by reason, PII counts, split sizes, malformed input (from :func:`read_stats`)."""
    summary: dict[str, Any] = {
        "documents_in": 0,
        "documents_kept": 0,
        "after_filters": 0,
        "dropped_by_reason": {},
        "dropped_total": 0,
        "malformed_lines": 0,
        "malformed_by_reason": {},
        "pii_masked": {},
        "normalisation": {},
        "splits": {},
        "near_duplicates": {},
    }

    def add(field: str, key: str, value: Any) -> None:
        summary[field][key] = summary[field].get(key, 0) + int(value)

    for stage, steps in stats.items():
        first_stage = stage.startswith("1")
        for step, counters in steps.items():
            reader = step.startswith("📖")
            for key, value in counters.items():
                if key.startswith("dropped_"):
                    add("dropped_by_reason", key.removeprefix("dropped_"), value)
                elif key.startswith("masked_"):
                    add("pii_masked", key.removeprefix("masked_"), value)
                elif key.startswith("malformed: "):
                    add("malformed_by_reason", key.removeprefix("malformed: "), value)
                elif key == "malformed_lines":
                    summary["malformed_lines"] += int(value)
                elif key in ("train", "heldout"):
                    add("splits", key, value)
                elif key in NORMALISATION_COUNTERS:
                    add("normalisation", key, value)
                elif key == "tally_kept" and first_stage:
                    summary["after_filters"] += int(value)
                elif key in ("candidate_pairs", "confirmed_pairs"):
                    add("near_duplicates", key.removesuffix("_pairs"), value)
                elif key == "documents" and reader and first_stage:
                    summary["documents_in"] += int(value)
    summary["documents_kept"] = sum(summary["splits"].values())
    summary["dropped_total"] = sum(summary["dropped_by_reason"].values())
    pairs = summary["near_duplicates"]
    if pairs:
        pairs["rejected"] = pairs.get("candidate", 0) - pairs.get("confirmed", 0)
    return summary


def summary_markdown(summary: dict[str, Any], seconds: float) -> str:
    lines = [
        "# Corpus preparation",
        "",
        f"{summary['documents_in']:,} documents read, {summary['documents_kept']:,} kept "
        f"({summary['splits'].get('train', 0):,} train, {summary['splits'].get('heldout', 0):,} held out), "
        f"{summary['dropped_total']:,} dropped, {summary['malformed_lines']:,} malformed input lines skipped; "
        f"{seconds:.1f} s.",
        "",
        "| dropped because | documents |",
        "|---|---:|",
    ]
    for reason, count in sorted(summary["dropped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason.replace('_', ' ')} | {count:,} |")
    if summary["pii_masked"]:
        lines += ["", "| personal data masked | occurrences |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in sorted(summary["pii_masked"].items())]
    if summary["normalisation"]:
        lines += ["", "| normalisation | documents changed |", "|---|---:|"]
        lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in sorted(summary["normalisation"].items())]
    return "\n".join(lines) + "\n"
