"""Strict loading of YAML run configs: every problem reported at once, each naming its field.

Pydantic does the validation; this module turns its errors into messages a user can act on: the dotted path of the
field (``train.stages[2].lr``), what was wrong, and for an unknown key the nearest valid key at that place.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from redwhale.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, bad YAML or a non-mapping top level is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, not {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], source: str = "config", moved: dict[str, str] | None = None) -> M:
    """Validate ``data`` against ``model``; raise one :class:`ConfigError` that lists every problem. ``moved`` maps
    dotted keys that moved to where they went, so an old config is told where a key went."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(model, exc, moved or {})
        head = f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
        raise ConfigError(head + "; ".join(problems)) from None


def format_errors(model: type[BaseModel], exc: ValidationError, moved: dict[str, str] | None = None) -> list[str]:
    """One message per distinct field; union alternatives are folded into one message."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for error in exc.errors(include_url=False):
        path, owner, rest = _resolve(model, error["loc"])
        key = path or "(top level)"
        merged.setdefault(key, []).append({**error, "_owner": owner, "_rest": rest})
    messages = []
    for path, errors in merged.items():
        first = errors[0]
        new_place = (moved or {}).get(re.sub(r"\[\d+\]", "", path))
        if first["type"] == "extra_forbidden" and new_place:
            messages.append(f"{path}: moved to {new_place}")
        elif first["type"] == "extra_forbidden":
            messages.append(_unknown_key(path, first["_owner"]))
        elif len(errors) > 1 and all(e["type"] != "extra_forbidden" for e in errors):
            wanted = sorted({_expected(e) for e in errors})
            messages.append(f"{path}: got {_show(first.get('input'))}, expected {' or '.join(wanted)}")
        else:
            message = _message(first)
            same_field = path != "(top level)" and message.startswith((path + ".", path + ":"))
            messages.append(message if same_field else f"{path}: {message}")
    return messages


def _resolve(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None, list[Any]]:
    """Walk ``loc`` through the schema; return the user-facing path (union tags dropped), the model that owns the
    last field, and whatever could not be walked."""
    path = ""
    annotation: Any = model
    owner: type[BaseModel] | None = model
    for index, part in enumerate(loc):
        base = _pick_model_or_list(annotation, part)
        if isinstance(part, int) and base is not None:
            path += f"[{part}]"
            annotation = base
            continue
        if isinstance(part, str) and isinstance(base, type) and issubclass(base, BaseModel):
            owner = base
            if part in base.model_fields:
                path += ("." if path else "") + part
                annotation = base.model_fields[part].annotation
                continue
            # an unknown key (extra_forbidden) or a union tag: a key is reported, a tag is skipped
            if index == len(loc) - 1:
                path += ("." if path else "") + part
            return path, owner, list(loc[index + 1 :])
        if isinstance(part, str) and index < len(loc) - 1:
            continue  # a union tag such as 'int' or "literal['auto']"
        if isinstance(part, int):
            path += f"[{part}]"
    return path, owner, []


def _pick_model_or_list(annotation: Any, part: Any) -> Any:
    """For a list index return the item type; for a field name return the model class inside ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _pick_model_or_list(typing.get_args(annotation)[0], part)
    if origin in (list, tuple) and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _pick_model_or_list(arg, part)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unknown_key(path: str, owner: type[BaseModel] | None) -> str:
    key = path.rsplit(".", 1)[-1]
    valid = sorted(owner.model_fields) if owner is not None else []
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean {near[0]!r}?)" if near else (f" (valid keys: {', '.join(valid)})" if valid else "")
    return f"{path}: unknown key{hint}"


def _expected(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error":
        return str(ctx.get("expected", "one of the listed values"))
    return error["type"].removesuffix("_type").removesuffix("_parsing").replace("_", " ")


def _message(error: dict[str, Any]) -> str:
    message = error["msg"]
    if error["type"] in ("missing",):
        return "required field is missing"
    if "input" in error and error["type"] not in ("value_error", "assertion_error"):
        return f"{message} (got {_show(error['input'])})"
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
