"""The pass pipeline: named, switchable graph passes over `onnx_ir` models that count what they change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern

from ..errors import DeployError


@dataclass(frozen=True)
class GraphPass:
    name: str
    description: str
    run: Callable[[ir.Model], int]  # mutates the model, returns how many places it changed


@dataclass(frozen=True)
class PassRecord:
    name: str
    changed: int

    def to_json(self) -> dict:
        return {"name": self.name, "changed": self.changed}


_PASSES: dict[str, GraphPass] = {}


def register_pass(graph_pass: GraphPass) -> GraphPass:
    if graph_pass.name in _PASSES:
        raise ValueError(f"pass {graph_pass.name!r} registered twice")
    _PASSES[graph_pass.name] = graph_pass
    return graph_pass


def rule_pass(name: str, description: str, *stages: Sequence[pattern.RewriteRule]) -> GraphPass:
    """A pass made of onnxscript rewrite rules, applied stage after stage (a later stage sees the
    graph the earlier one left, so a specific rule can claim its nodes before a general one)."""

    def run(model: ir.Model) -> int:
        return sum(pattern.RewriteRuleSet(list(stage)).apply_to_model(model) for stage in stages)

    return register_pass(GraphPass(name, description, run))


def available_passes() -> dict[str, GraphPass]:
    from . import pooling  # noqa: F401  (registers its passes)

    return dict(_PASSES)


def get_pass(name: str) -> GraphPass:
    passes = available_passes()
    if name not in passes:
        import difflib

        close = difflib.get_close_matches(name, passes, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeployError(f"unknown pass {name!r}{hint} (run `python -m deploy passes` for the list)")
    return passes[name]


def run_passes(model: onnx.ModelProto, names: Iterable[str]) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """Apply the named passes in order; returns the new model and what each pass changed."""
    selected = [get_pass(n) for n in names]
    if not selected:
        return model, []
    ir_model = ir.serde.deserialize_model(model)
    records = [PassRecord(p.name, p.run(ir_model)) for p in selected]
    return ir.serde.serialize_model(ir_model), records
