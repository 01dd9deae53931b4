"""Reading constants and uses off `onnx_ir` values: the checks every rewrite rule makes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def const_array(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def const_scalar(value: ir.Value | None) -> float | None:
    array = const_array(value)
    return float(array.reshape(())) if array is not None and array.size == 1 else None


def const_ints(value: ir.Value | None) -> list[int] | None:
    array = const_array(value)
    return [int(v) for v in array.reshape(-1)] if array is not None else None


def float_dtype(value: ir.Value) -> np.dtype:
    try:
        return value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
    except (TypeError, AttributeError):
        return np.dtype(np.float32)


def only_consumer(value: ir.Value, node: ir.Node | None = None) -> bool:
    users = {use.node for use in value.uses()}
    return len(users) == 1 and (node is None or node in users) and not value.is_graph_output()


def unique_name(graph: ir.Graph, base: str) -> str:
    name, n = base, 0
    while name in graph.initializers:
        n += 1
        name = f"{base}.{n}"
    return name
