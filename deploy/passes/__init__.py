"""Graph passes over exported ONNX models, each named, counted and switchable.

Takes the cleaned-up ONNX export and a list of pass names; hands on the rewritten graph and what each
pass changed (`PassRecord`, in `record`). `base` says what a pass is, the rule modules define them (one
per concern: attention, conv, normalization, pooling, precision), `pipeline` runs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .record import PassRecord

if TYPE_CHECKING:
    from .base import GraphPass, register_pass, rule_pass
    from .pipeline import available_passes, get_pass, run_passes

__all__ = ["GraphPass", "PassRecord", "available_passes", "get_pass", "register_pass", "rule_pass", "run_passes"]


def __getattr__(name: str) -> Any:
    # The rules need onnx and onnxscript; readers of pass records (manifests, results) do not.
    if name in ("available_passes", "get_pass", "run_passes"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("GraphPass", "register_pass", "rule_pass"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
