"""Errors runtime adapters raise for problems the user can act on; the CLI prints them as one line."""

from __future__ import annotations


class RuntimeAdapterError(RuntimeError):
    """A runtime problem the user can act on (missing package, bad engine, wrong input)."""


class RuntimeUnavailableError(RuntimeAdapterError):
    pass


class EngineLoadError(RuntimeAdapterError):
    pass


class InputMismatchError(RuntimeAdapterError):
    pass
