"""Callable packages: `from deploy import export` is both a stage's package and the function that runs it."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def callable_package(name: str, call: Callable[..., Any]) -> None:
    """Make the package `name` callable as `call`: `from deploy import export` is then both the export stage's
    package (its modules stay importable as `deploy.export.stage`) and the function that runs it.

    A function `export` in `deploy/__init__.py` cannot do this: importing `deploy.export` (which the command
    line and the stages do) rebinds the package attribute to the sub-package, so the function would vanish.
    """
    package = sys.modules[name]

    class CallablePackage(types.ModuleType):
        __doc__ = package.__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return call(*args, **kwargs)

    package.__class__ = CallablePackage
