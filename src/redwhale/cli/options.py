"""Command-line options generated from a config section, so that ``--help`` shows the schema's own descriptions and
defaults and a command builds exactly the section a run would.

``@section_options(PrepareSection, "prepare")`` adds one option per scalar field of the section (``--min-chars``,
``--dedup-near/--no-dedup-near``, comma-separated lists) to a command whose function takes a parameter ``prepare``
and, optionally, ``config`` (a run config whose section is the starting point). The function receives the validated
section: the config's values (or the schema defaults), overridden by the options given.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from redwhale.config import load_config
from redwhale.config.validation import validate
from redwhale.core.errors import ConfigError


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _kind(annotation: Any) -> tuple[str, Any] | None:
    """How a field is given on the command line, or None when it is not a scalar (nested sections, dicts)."""
    members = [m for m in _members(annotation) if m is not type(None)]
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    plain = [m for m in members if typing.get_origin(m) is not Literal]
    if not plain and literals:
        return ("choice", literals)
    if plain == [bool]:
        return ("flag", None)
    if len(plain) == 1 and typing.get_origin(plain[0]) is list:
        item = typing.get_args(plain[0])[0]
        if item not in (int, float, str) and typing.get_origin(item) is not Literal:
            return None
        return ("literal+list", (item, literals)) if literals else ("list", item)
    if len(plain) == 1 and plain[0] in (int, float, str, Path):
        return ("literal+" + plain[0].__name__, literals) if literals else (plain[0].__name__, None)
    return None


def _convert(kind: tuple[str, Any], text: Any, option: str) -> Any:
    name, extra = kind
    try:
        if name == "literal+list" and text in extra[1]:
            return text
        if name in ("list", "literal+list"):
            item = extra[0] if name == "literal+list" else extra
            item = item if item in (int, float) else str
            return [item(x.strip()) for x in str(text).split(",") if x.strip()]
        if name == "choice":
            return next((v for v in extra if str(v) == text), text)
        if name.startswith("literal+"):
            return text if text in extra else {"int": int, "float": float, "str": str}[name[8:]](text)
    except ValueError:
        raise ConfigError(f"{option}: cannot read {text!r}") from None
    return text


def _parameter(field_name: str, field, kind: tuple[str, Any]) -> inspect.Parameter:
    flag = "--" + field_name.replace("_", "-")
    default = field.get_default(call_default_factory=True)
    shown = default if not isinstance(default, list) else ",".join(str(x) for x in default)
    help_text = f"{field.description} [default: {shown}]"
    name, extra = kind
    if name == "flag":
        option = typer.Option(f"{flag}/--no-{field_name.replace('_', '-')}", help=help_text, show_default=False)
        annotation: Any = bool | None
    elif name == "choice":
        option = typer.Option(
            flag, help=f"{field.description} (one of: {', '.join(str(v) for v in extra)}) [default: {shown}]"
        )
        annotation = str | None
    elif name in ("int", "float", "Path"):
        option = typer.Option(flag, help=help_text)
        annotation = {"int": int, "float": float, "Path": Path}[name] | None
    else:
        option = typer.Option(flag, help=help_text)
        annotation = str | None
    return inspect.Parameter(
        f"{field_name}__opt", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[annotation, option]
    )


def section_options(
    section: type[BaseModel], name: str, exclude: tuple[str, ...] = (), key: str | None = None
) -> Callable:
    """Decorate a command: options for every scalar field of ``section``, the built section passed as ``name``
    (started from the ``key`` section of ``--config``, by default the section called ``name``)."""
    key = key or name
    fields = {
        f: (info, kind)
        for f, info in section.model_fields.items()
        if f not in exclude and (kind := _kind(info.annotation)) is not None
    }

    def decorate(function: Callable) -> Callable:
        hints = typing.get_type_hints(function, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(function).parameters.values()
            if p.name != name
        ]
        generated = [_parameter(f, info, kind) for f, (info, kind) in fields.items()]

        @functools.wraps(function)
        def command(**kwargs: Any) -> Any:
            given = {f: kwargs.pop(f"{f}__opt") for f in fields}
            config = kwargs.get("config")
            start = getattr(load_config(config), key).model_dump(mode="json", exclude_unset=True) if config else {}
            overrides = {
                f: _convert(fields[f][1], v, "--" + f.replace("_", "-")) for f, v in given.items() if v is not None
            }
            kwargs[name] = validate(section, {**start, **overrides}, source="options")
            return function(**kwargs)

        command.__signature__ = inspect.Signature(own + generated)
        command.__annotations__ = {}
        del command.__wrapped__
        return command

    return decorate
