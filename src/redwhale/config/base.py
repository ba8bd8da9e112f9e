"""The base of every config section, and the reference-config writer.

Every section is a strict pydantic model: unknown keys are refused, numbers are not parsed from strings, and every
field carries a one-line description (with its unit) that becomes both the ``--help`` text and the comment in the
reference config. Defaults live here, in the schema, and nowhere else.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

#: A filesystem path given as a string in YAML (paths are the one place where a string is converted).
PathField = Annotated[Path, Field(strict=False)]


class Section(BaseModel):
    """A strict, documented group of config fields."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=False)


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
