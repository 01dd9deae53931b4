"""What a pass is: a named, switchable rewrite over an `onnx_ir` model that counts what it changed.

The rule modules (attention, conv, normalization, pooling, precision) register their passes here as
they are imported; `deploy.passes.pipeline` imports them all and runs a list of passes in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter import pattern

from .record import PassRecord

if TYPE_CHECKING:
    from .quantize import Calibration

__all__ = ["GraphPass", "PassRecord", "register_pass", "rule_pass"]


@dataclass(frozen=True)
class GraphPass:
    name: str
    description: str
    run: Callable[[ir.Model], int]  # mutates the model, returns how many places it changed
    category: str = "graph"  # attention, pooling, normalization, conv, precision: groups `deploy passes`
    # A pass that needs calibration samples (int8-qdq) works on the whole ModelProto instead of `run`.
    calibrated: Callable[[onnx.ModelProto, Calibration], tuple[onnx.ModelProto, PassRecord]] | None = None


_PASSES: dict[str, GraphPass] = {}


def register_pass(graph_pass: GraphPass) -> GraphPass:
    if graph_pass.name in _PASSES:
        raise ValueError(f"pass {graph_pass.name!r} registered twice")
    _PASSES[graph_pass.name] = graph_pass
    return graph_pass


def rule_pass(name: str, description: str, *stages: Sequence[pattern.RewriteRule], min_opset: int | None = None,
              raise_opset: bool = False, category: str) -> GraphPass:
    """A pass made of onnxscript rewrite rules, applied stage after stage (a later stage sees the
    graph the earlier one left, so a specific rule can claim its nodes before a general one).

    `min_opset`: the replacement uses an op that only exists from this ONNX opset (LayerNormalization 17,
    Gelu 20, Attention 23). Below it the pass does nothing, so it never overrides the opset a target (or
    `--opset`) asked for, unless `raise_opset`: then a graph it fires on is raised to that opset with
    onnxscript's version converter (attention-onnx, where the new op is the point of the pass).
    """

    def run(model: ir.Model) -> int:
        if min_opset and not raise_opset and onnx_opset(model) < min_opset:
            return 0
        changed = sum(pattern.RewriteRuleSet(list(stage)).apply_to_model(model) for stage in stages)
        if changed:
            finish(model, min_opset)
        return changed

    return register_pass(GraphPass(name, description, run, category))


def onnx_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def finish(model: ir.Model, min_opset: int | None = None) -> None:
    """After a rewrite: drop what the rewrite orphaned (a rule only removes the nodes it matched, so the
    shape arithmetic that fed a removed Reshape would otherwise stay), and raise the opset if needed."""
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.RemoveUnusedOpsetsPass()(model)
    # Replacements write their small constants (scales, shapes) as Constant nodes; store them as the
    # exporter does, as initializers.
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    if min_opset and onnx_opset(model) < min_opset:
        import onnxscript.version_converter

        onnxscript.version_converter.convert_version(model, min_opset)
        # An opset comes with a minimum IR version (23 needs 11); onnxruntime 1.31 reads up to 13.
        needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", min_opset)])
        model.ir_version = max(model.ir_version, needed)
