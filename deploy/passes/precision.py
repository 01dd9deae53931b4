"""fp16 graphs with fp32 islands, for runtimes whose fp16 comes from the graph itself.

TensorRT 11 builds strongly typed networks only: an engine's precision is the ONNX graph's, so fp16 means
an ONNX graph whose tensors are fp16 except where fp16 overflows or loses too much (NVIDIA's ModelOpt
AutoCast does the same). ONNX Runtime runs such a graph as it is (on x86 CPUs without fp16 arithmetic
its kernels upcast, so this is a correctness route there, not a speed-up).

Kept in fp32 (`KEEP_FP32`): LayerNorm statistics (`LayerNormalization`, and the decomposed chain's
reductions, powers and roots where `layernorm-fuse` did not run), `Softmax` (exp of QK^T overflows fp16
beyond ~11), and reductions (the final token mean, pooling over tokens). Graph inputs and outputs stay
fp32, so feeds and parity need no change.

Why not a library converter: ONNX Runtime's `onnxruntime.transformers.float16` (onnxconverter-common's,
maintained) was tried first. On our graphs it casts the fp32 input to fp16 and straight back before the
first LayerNorm (losing precision for nothing), emits the Cast of a weight shared by several kept nodes
once per use under one name, appends its Casts out of order and leaves value_info types that ONNX shape
inference rejects. The conversion below is small because the rule is: a float tensor has the precision of
the node that makes it (initializers: of the nodes that use them), and one Cast per (tensor, precision)
joins the two sides.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import DeployError
from .base import GraphPass, register_pass

KEEP_FP32 = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
    "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "GlobalAveragePool",
    "Pow", "Sqrt", "Reciprocal",
)
# Ops whose output type is an attribute, not their inputs': they stay as they are, with Casts after.
_TYPED_BY_ATTRIBUTE = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike",
                       "Multinomial", "Bernoulli")
# Inputs that must stay fp32 whatever the node computes in.
_FP32_INPUTS = {"Resize": (2,), "Upsample": (1,)}
_FP16_MAX = float(np.finfo(np.float16).max)

F32, F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16


def is_fp16(model: ir.Model) -> bool:
    """Whether the graph already computes in fp16 (converting again would also convert its islands)."""
    return any(value.dtype == F16 for value in model.graph.initializers.values()) or any(
        out.dtype == F16 for node in model.graph for out in node.outputs)


def convert_fp16(model: ir.Model, keep_fp32: tuple[str, ...] = KEEP_FP32) -> int:
    """Convert in place; returns how many nodes now compute in fp16 (0 if the graph already was fp16)."""
    graph = model.graph
    if is_fp16(model):
        return 0
    if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
           for node in graph for attr in node.attributes.values()):
        raise DeployError("fp16-convert does not handle control flow (If/Loop/Scan subgraphs)")
    half = {node for node in graph if node.op_type not in keep_fp32 and node.op_type not in _TYPED_BY_ATTRIBUTE
            and node.domain in ("", "ai.onnx", "com.microsoft")}
    original_nodes = list(graph)

    # A float tensor takes the precision of the node that makes it; attributes that fix a type follow.
    converted = 0
    for node in original_nodes:
        if node not in half:
            continue
        if node.op_type == "Cast" and node.attributes.get_int("to", 0) == F32:
            node.attributes["to"] = ir.AttrInt64("to", F16)
        elif node.op_type in ("Constant", "ConstantOfShape") and "value" in node.attributes:
            tensor = node.attributes["value"].as_tensor()
            if tensor.dtype == F32:
                node.attributes["value"] = ir.AttrTensor("value", _half(tensor.numpy(), tensor.name))
        float_outputs = [out for out in node.outputs if out.dtype == F32]
        for out in float_outputs:
            out.dtype = F16
        converted += bool(float_outputs)

    # Initializers: fp16 where only fp16 nodes read them, an fp16 copy where both kinds do.
    for value in list(graph.initializers.values()):
        if value.dtype != F32 or value.const_value is None:
            continue
        half_uses = [use for use in value.uses() if use.node in half and not _fp32_input(use.node, use.idx)]
        if not half_uses:
            continue
        if len(half_uses) == len(list(value.uses())) and not value.is_graph_output():
            value.const_value = _half(value.const_value.numpy(), value.name)
            value.dtype = F16
            continue
        copy = ir.Value(name=f"{value.name}_fp16", type=ir.TensorType(F16), shape=value.shape,
                        const_value=_half(value.const_value.numpy(), f"{value.name}_fp16"))
        graph.register_initializer(copy)
        for use in half_uses:
            use.node.replace_input_with(use.idx, copy)

    # Where a node reads the other precision, one Cast per (tensor, precision) joins the two sides.
    casts: dict[tuple[int, ir.DataType], ir.Value] = {}

    def cast(value: ir.Value, to: ir.DataType) -> ir.Value:
        if (id(value), to) not in casts:
            name = f"{value.name}_{'fp16' if to == F16 else 'fp32'}"
            node = ir.Node("", "Cast", [value], attributes=[ir.AttrInt64("to", to)], name=name)
            node.outputs[0].name, node.outputs[0].dtype, node.outputs[0].shape = name, to, value.shape
            producer = value.producer()
            if producer is not None:
                graph.insert_after(producer, node)
            else:
                graph.insert_before(graph.node(0), node)
            casts[(id(value), to)] = node.outputs[0]
        return casts[(id(value), to)]

    for node in original_nodes:
        for index, read in enumerate(node.inputs):
            if read is None or read.dtype not in (F16, F32):
                continue
            want = F16 if node in half and not _fp32_input(node, index) else F32
            if read.dtype != want:
                node.replace_input_with(index, cast(read, want))

    # Graph outputs stay fp32, under their own names.
    for index, value in enumerate(list(graph.outputs)):
        if value.dtype == F16:
            name = value.name
            value.name = f"{name}_fp16"
            fp32 = cast(value, F32)
            fp32.name = name
            graph.outputs[index] = fp32
    return converted


def _half(array: np.ndarray, name: str | None) -> ir.TensorProtocol:
    # Out-of-range weights saturate to fp16's largest finite value instead of becoming inf.
    return ir.tensor(np.clip(array, -_FP16_MAX, _FP16_MAX).astype(np.float16), name=name)


def _fp32_input(node: ir.Node, index: int) -> bool:
    return index in _FP32_INPUTS.get(node.op_type, ())


FP16_CONVERT = register_pass(GraphPass(
    "fp16-convert",
    "fp16 graph with fp32 islands (LayerNorm, Softmax, reductions) and fp32 inputs/outputs, for runtimes "
    "whose fp16 comes from the graph (TensorRT strongly typed, ONNX Runtime); appended by the export stage "
    "for --precision fp16 on those targets",
    convert_fp16,
    "precision",
))
