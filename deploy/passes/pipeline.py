"""Running passes: look them up by name and apply a list in order, re-inferring shapes between them.

Takes an exported `onnx.ModelProto` and pass names (a target's defaults, `--passes`, or `auto`'s
winner); hands on the rewritten model and one `PassRecord` (name, places changed) per pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from ..errors import DeployError
from . import attention, conv, normalization, pooling, precision, scopes  # noqa: F401  (importing registers them)
from .base import _PASSES, GraphPass, PassRecord
from .quantize import Calibration


def available_passes() -> dict[str, GraphPass]:
    return dict(_PASSES)


def get_pass(name: str) -> GraphPass:
    passes = available_passes()
    if name not in passes:
        import difflib

        close = difflib.get_close_matches(name, passes, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeployError(f"unknown pass {name!r}{hint} (run `python -m deploy passes` for the list)")
    return passes[name]


def run_passes(model: onnx.ModelProto, names: Iterable[str],
               calibration: Calibration | None = None) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """Apply the named passes in order; returns the new model and what each pass changed.

    `calibration` feeds the passes that need samples (int8-qdq); without it they are an error.
    """
    selected = [get_pass(n) for n in names]
    if not selected:
        return model, []
    ir_model = ir.serde.deserialize_model(model)
    records = []
    stale = True
    for graph_pass in selected:
        if graph_pass.calibrated is not None:
            if calibration is None:
                raise DeployError(f"pass {graph_pass.name} needs calibration samples: it runs as part of "
                                  "--precision int8 on the targets that take a Q/DQ graph")
            proto, record = graph_pass.calibrated(_serialized(ir_model), calibration)
            ir_model, stale = ir.serde.deserialize_model(proto), True
            records.append(record)
            continue
        if stale:
            # Rules read shapes in their checks (head size, packed widths); values a previous pass created
            # have none until inference runs again.
            infer_shapes(ir_model)
        changed = graph_pass.run(ir_model)
        records.append(PassRecord(graph_pass.name, changed))
        stale = changed > 0
    return _serialized(ir_model), records


def _serialized(ir_model: ir.Model) -> onnx.ModelProto:
    proto = ir.serde.serialize_model(ir_model)
    scopes.fill_missing(proto)  # nodes a pass made by hand (fp16 Casts) take their neighbour's module
    return proto


def infer_shapes(model: ir.Model) -> None:
    # Non-strict: ops ONNX shape inference does not know (com.microsoft) just keep unknown shapes.
    common_passes.ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)(model)
