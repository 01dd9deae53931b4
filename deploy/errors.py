"""Errors the export stage and harness raise for problems the user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DeployError(RuntimeError):
    """Printed by the CLI as one line: what is wrong and what to do."""


class ParityError(DeployError):
    """An engine's outputs disagree with PyTorch beyond the tolerance of its precision."""


class OutputDirError(DeployError):
    pass


class IntegrityError(DeployError):
    """An artifact whose files (the manifest included) are not what its export wrote: a refused load."""


def validation_problem(exc: ValidationError) -> tuple[tuple[str | int, ...], str]:
    """Where pydantic's first problem is (its location) and what it is, in words: `must be at least 1, not 0`."""
    error = exc.errors()[0]
    kind, given, limits = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        what = "missing"
    elif kind in _LIMITS:
        what = f"must be {_LIMITS[kind]} {next(iter(limits.values()), '?')}, not {_shown(given)}"
    elif kind in _KINDS:
        what = f"must be {_KINDS[kind]}, not {_shown(given)}"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        what = "is not a known key"
    else:
        what = f"{error['msg'][:1].lower()}{error['msg'][1:]}"
    return tuple(error["loc"]), what


_LIMITS = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
           "less_than": "less than"}
_KINDS = {"finite_number": "a finite number", "int_type": "an integer", "int_from_float": "an integer",
          "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
          "bool_type": "true or false", "string_type": "a string", "list_type": "a list", "dict_type": "a table"}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
