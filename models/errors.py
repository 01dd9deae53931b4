"""Errors the zoo raises for bad user input; the CLI prints them as one line."""

from __future__ import annotations


class ModelError(ValueError):
    """A problem with a model name, configuration or checkpoint that the user can fix."""


class UnknownModelError(ModelError):
    pass


class CheckpointError(ModelError):
    pass
