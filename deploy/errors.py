"""Errors the export stage and harness raise for problems the user can act on."""

from __future__ import annotations


class DeployError(RuntimeError):
    """Printed by the CLI as one line: what is wrong and what to do."""


class ParityError(DeployError):
    """An engine's outputs disagree with PyTorch beyond the tolerance of its precision."""


class OutputDirError(DeployError):
    pass
