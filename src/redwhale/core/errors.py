"""Errors that reach the user as one clear line.

Everything the user can fix (a missing file, a typo in a config, a corrupt model, no network) is raised as a
:class:`RedwhaleError`. The CLI prints its message on one line and exits non-zero; a traceback is shown only with
``--debug``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RedwhaleError(Exception):
    """A problem the user can fix; its message is shown as is, on one line."""

    exit_code = 2


class ConfigError(RedwhaleError):
    """A run config (or a command's options) failed validation; the message lists every problem."""


class ModelSourceError(RedwhaleError):
    """A model path, file or Hub id could not be resolved or loaded."""


class DataError(RedwhaleError):
    """Input data is missing, empty or malformed beyond what can be skipped."""


class TokenizerError(RedwhaleError):
    """A tokenizer is of an unsupported kind, or a merge would break one of its guarantees."""


def missing_extra(package: str, extra: str) -> RedwhaleError:
    """The error for an optional dependency that is not installed."""
    return RedwhaleError(f"this needs the optional package {package!r}: pip install 'redwhale[{extra}]'")
