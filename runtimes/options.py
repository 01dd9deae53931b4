"""Per-runtime build and load settings, typed: each adapter declares a frozen dataclass of the knobs it has.

`RuntimeOptions.parse({"num_streams": "2"}, source=...)` is where user input (`--option KEY=VALUE`, a
profile's `[options.TARGET]` table) becomes a typed value: unknown names and values of the wrong type are
one `RuntimeAdapterError` naming the option and what it takes; each subclass's `__post_init__` checks the
values' ranges. Nothing here imports a runtime.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import RuntimeAdapterError

O = TypeVar("O", bound="RuntimeOptions")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """No options: the base of every adapter's options (and what adapters without knobs take)."""

    @classmethod
    def parse(cls: type[O], values: Mapping[str, object], source: str = "runtime options") -> O:
        """Typed options from names and values (strings from the command line are converted)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise RuntimeAdapterError(f"{source}: unknown option(s) {', '.join(unknown)} (known: {listed})")
        return cls(**{name: _convert(value, hints[name], f"{source}: {name}") for name, value in values.items()})

    def to_json(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}


def options_for(options: RuntimeOptions | None, kind: type[O], runtime: str) -> O:
    """The adapter's own options out of BuildOptions.runtime (its defaults when none were given)."""
    if options is None or type(options) is RuntimeOptions:
        return kind()
    if not isinstance(options, kind):
        raise RuntimeAdapterError(f"{runtime} takes {kind.__name__}, not {type(options).__name__}")
    return options


def _convert(value: object, annotation: Any, where: str) -> object:
    """`value` as one of the types `annotation` allows (bool, int, float, str, None, a tuple of str); an error
    otherwise."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in allowed:
        converted = _as(value, kind)
        if converted is not _NO:
            return converted
    names = " or ".join(_type_name(k) for k in allowed)
    raise RuntimeAdapterError(f"{where} must be {names}, not {value!r}")


def _type_name(kind: Any) -> str:
    if kind is type(None):
        return "none"
    if typing.get_origin(kind) is tuple:
        return "a comma-separated list"
    return getattr(kind, "__name__", str(kind))


_NO = object()


def _as(value: object, kind: Any) -> object:
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: "a,b" on the command line, a list from JSON or TOML
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            return _NO
        return tuple(item.strip() for item in items if item.strip())
    if kind is type(None):
        return None if value is None or (isinstance(value, str) and value.lower() in ("none", "")) else _NO
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower() if isinstance(value, (str, int)) else ""
        return True if text in _TRUE else False if text in _FALSE else _NO
    if kind in (int, float):
        if isinstance(value, bool):
            return _NO
        if isinstance(value, (int, float)) and (kind is float or float(value).is_integer()):
            return kind(value)
        try:
            return kind(value) if isinstance(value, str) else _NO
        except ValueError:
            return _NO
    if kind is str:
        return value if isinstance(value, str) else _NO
    return value if isinstance(value, kind) else _NO
