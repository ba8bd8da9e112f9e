"""The base of every config section, how a section is hashed, and the reference-config writer.

Every section is a strict pydantic model: unknown keys are refused, numbers are not parsed from strings, and every
field carries a one-line description (with its unit) that becomes the comment in the reference config and, for the
commands whose options are generated from a section (:mod:`redwhale.cli.options`), the ``--help`` text. Defaults live
in the schema and nowhere else.

:func:`recording_reads` records which fields are read while it is active; a test runs a whole run under it and
fails if a field is read by no phase (a field validated and then ignored).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

#: A filesystem path given as a string in YAML (paths are the one place where a string is converted).
PathField = Annotated[Path, Field(strict=False)]

#: ``json_schema_extra`` of a field that does not change any result (where outputs go, processes, logging): it is
#: left out of phase hashes, so changing it never redoes work.
RESULTS_NEUTRAL = {"results_neutral": True}
#: ``json_schema_extra`` of a field naming input files (or a model): phase hashes cover their content.
INPUT = {"input": True}

_READS: ContextVar[set[tuple[str, str]] | None] = ContextVar("redwhale_config_reads", default=None)


class Section(BaseModel):
    """A strict, documented group of config fields."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=False)

    def __getattribute__(self, name: str) -> Any:
        reads = _READS.get()
        if reads is not None and not name.startswith("_") and name in type(self).model_fields:
            reads.add((type(self).__name__, name))
        return super().__getattribute__(name)


@contextmanager
def recording_reads() -> Iterator[set[tuple[str, str]]]:
    """Within the block, every field read on any section is added to the yielded set as ``(class name, field)``."""
    reads: set[tuple[str, str]] = set()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def all_fields(model: type[BaseModel]) -> set[tuple[str, str]]:
    """Every ``(class name, field)`` of ``model`` and of the sections nested in it."""
    found: set[tuple[str, str]] = set()
    pending = [model]
    while pending:
        current = pending.pop()
        for name, field in current.model_fields.items():
            if (current.__name__, name) in found:
                continue
            found.add((current.__name__, name))
            for candidate in _flatten(field.annotation):
                nested = _section_type(candidate) or _list_item_section(candidate)
                if nested is not None:
                    pending.append(nested)
    return found


def _extra(field: Any, key: str) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(key))


def hashed(section: BaseModel, keep_inputs: bool = True) -> Any:
    """The section's values as plain data, without its results-neutral fields (recursively); without its input
    fields too when ``keep_inputs`` is false (their content digests stand for them, so a moved file is the same)."""
    out: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        if _extra(field, "results_neutral") or (not keep_inputs and _extra(field, "input")):
            continue
        out[name] = _hashed_value(object.__getattribute__(section, name), keep_inputs)
    return out


def _hashed_value(value: Any, keep_inputs: bool = True) -> Any:
    if isinstance(value, BaseModel):
        return hashed(value, keep_inputs)
    if isinstance(value, list | tuple):
        return [_hashed_value(v, keep_inputs) for v in value]
    if isinstance(value, dict):
        return {k: _hashed_value(v, keep_inputs) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def input_values(section: BaseModel) -> list[Any]:
    """The values of every input field in the section (recursively): file, folder or model specs to hash by content."""
    found: list[Any] = []
    for name, field in type(section).model_fields.items():
        value = object.__getattribute__(section, name)
        if _extra(field, "input") and value is not None:
            found.append(value)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                found.extend(input_values(item))
    return found


def dump(section: BaseModel) -> dict[str, Any]:
    """The section as plain YAML-ready data (paths as strings)."""
    return section.model_dump(mode="json")


def to_yaml(section: BaseModel) -> str:
    """The fully resolved section as YAML, in schema order."""
    return yaml.safe_dump(dump(section), sort_keys=False, allow_unicode=True, width=120)


def reference_yaml(model: type[BaseModel], header: str = "") -> str:
    """A YAML document with every field of ``model`` at its default and its description as a comment.

    Fields without a default are shown with a placeholder; lists of sections show their default items.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _emit_model(model, model.model_construct() if _all_defaults(model) else None, lines, indent=0)
    return "\n".join(lines) + "\n"


def _all_defaults(model: type[BaseModel]) -> bool:
    return all(not field.is_required() for field in model.model_fields.values())


def _emit_model(model: type[BaseModel], instance: Any, lines: list[str], indent: int, first_prefix: str = "") -> None:
    pad = " " * indent
    for index, (name, field) in enumerate(model.model_fields.items()):
        prefix = first_prefix if index == 0 and first_prefix else pad
        comment = f"  # {field.description}" if field.description else ""
        nested = _section_type(field.annotation)
        # a required field has no default, but a default list item (e.g. a stage) still carries its value
        known = instance is not None and name in getattr(instance, "model_fields_set", set()) | set(
            getattr(instance, "__dict__", {})
        )
        if known:
            value: Any = getattr(instance, name)
        elif field.is_required():
            value = None
        else:
            value = field.get_default(call_default_factory=True)
        if nested is not None and isinstance(value, BaseModel):
            lines.append(f"{prefix}{name}:{comment}")
            _emit_model(nested, value, lines, indent + 2)
            continue
        item_type = _list_item_section(field.annotation)
        if item_type is not None and isinstance(value, list) and value:
            lines.append(f"{prefix}{name}:{comment}")
            for item in value:
                _emit_model(item_type, item, lines, indent + 4, first_prefix=" " * (indent + 2) + "- ")
            continue
        shown = "<required>" if field.is_required() and not known else _scalar(value)
        lines.append(f"{prefix}{name}: {shown}{comment}")


def _scalar(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _section_type(annotation: Any) -> type[BaseModel] | None:
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _list_item_section(annotation: Any) -> type[BaseModel] | None:
    for candidate in _flatten(annotation):
        if typing.get_origin(candidate) is list:
            return _section_type(typing.get_args(candidate)[0])
    return None


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_flatten(arg))
        return out
    return [annotation]
