"""ONNX Runtime's compute kernels timed alone at the shapes a model gives them: what the kernel can do there.

A model's share of the SGEMM ceiling (one 2048^3 MatMul) mixes two things. One is what the graph costs
beyond its kernels: layout copies, unfused elementwise work, scheduling; that part a graph rewrite can
fix. The other is how fast ORT's kernels run at the shapes the architecture chose: a 49-token MatMul after
token pooling, 32-wide attention heads, a depthwise convolution; no rewrite of the same computation
changes those. `isolated_kernels` separates them. One profiled session of the engine records every
kernel's time and input shapes (ORT's trace carries `input_type_shape`) and saves ORT's optimized graph.
Each compute node of that graph (MatMul, Gemm, Conv, fused attention, ...) then runs alone in a one-node
session, on its own weights and inputs of the traced shapes, under the same profiler and threads. Its
isolated kernel time is what that kernel takes at that shape with nothing else in the way, and an upper
bound on what any graph form could give it: its weights stay cache-hot there, as they cannot inside a
model whose weights outgrow the cache. So each kernel with weights is also timed *cold*: copies of the
node, each on random weights of its own (ORT keeps equal initializers once: copies of one weight stayed
as fast as hot), 96 MB in all, run in one session, so that every copy's weights come from memory as they
do in the model. A kernel whose in-model time matches its cold time is held by
memory traffic at batch 1, not by the graph around it.

Takes an ONNX file the CPU provider runs; hands on one typed `KernelTime` per compute node. The traces are
read by `ort_trace`. Nothing here depends on the harness.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ort_trace import TRACE_DTYPES, TracedNode, TraceSettings, trace_kernels

# The ops whose MACs the model's count holds; everything else is the graph's own overhead.
COMPUTE_OPS = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "Attention", "MultiHeadAttention")
# Weights the copies of a node read in all when timed cold: three times the 32 MB last-level cache of the
# machines measured here, so each copy's weights come from memory.
COLD_BYTES = 96 * 2**20
_MAX_COPIES = 1024


@dataclass(frozen=True)
class KernelTime:
    """A compute node's time inside the model next to its time alone, at the same shapes and threads."""

    name: str
    op_type: str
    shape: str  # "98x384 @ 384x1536" and the like: what the kernel was asked to compute
    macs: int
    in_model_ms: float
    isolated_ms: float
    weight_bytes: int = 0  # its constant inputs: what it reads from memory per inference besides activations
    cold_ms: float | None = None  # alone with weights no cache holds, as in a model larger than the cache

    def gflops(self, ms: float) -> float:
        return 2 * self.macs / (ms * 1e-3) / 1e9 if ms > 0 else 0.0


@dataclass(frozen=True)
class KernelReport:
    """Every traced kernel's in-model time, and the compute ones timed alone."""

    total_ms: float  # all kernels of one inference, in the model
    kernels: tuple[KernelTime, ...]
    other_ms: dict[str, float]  # op type -> in-model time of the nodes that are not compute kernels


def isolated_kernels(path: Path, model_run: TraceSettings, alone_run: TraceSettings | None = None,
                     rounds: int = 3, cold: bool = True) -> KernelReport:
    """Profile the engine at `path`, then time each of its compute kernels alone (one session per distinct
    node; `alone_run` defaults to `model_run`); nodes equal in op, attributes and shapes are timed once.

    The model's trace and the kernels alone alternate for `rounds` rounds, and each time is its lowest
    round's median: on a shared machine, contention in one stretch then cannot fall on one side only.
    Each kernel with weights is then timed cold once (`KernelTime.cold_ms`; `cold=False` leaves it None).
    """
    import onnx

    alone_run = alone_run or model_run
    with tempfile.TemporaryDirectory(prefix="ort-kernels-") as work:
        optimized = Path(work) / "optimized.onnx"
        traces = [trace_kernels(path, model_run, optimized)]
        graph_model = onnx.load(str(optimized))
        plan = _alone_plan(graph_model, traces[0], SourceConvs.of(onnx.load(str(path), load_external_data=False)))
        alone: list[dict[str, float]] = []
        for index in range(rounds):
            if index:
                traces.append(trace_kernels(path, model_run))
            alone.append({key: _time_alone(model, name, alone_run, Path(work)) for key, (model, name) in
                          plan.models.items()})
        cold_ms = {key: _time_cold(model, alone_run, Path(work)) if cold else None
                   for key, (model, _) in plan.models.items()}
    fastest = {name: min(t.time_ms for trace in traces for t in trace if t.name == name) for name in plan.order}
    kernels = tuple(KernelTime(name, op, shape, macs, fastest[name], min(times[key] for times in alone), size,
                               cold_ms[key]) for name, (op, shape, macs, key, size) in plan.kernels.items())
    other: dict[str, float] = {}
    for name in plan.order:
        if name not in plan.kernels:
            op = plan.op_types[name]
            other[op] = other.get(op, 0.0) + fastest[name]
    return KernelReport(sum(fastest.values()), kernels, other)


@dataclass
class _AlonePlan:
    """What to time alone: one one-node model per distinct kernel, and which traced node runs which."""

    order: list[str]  # every traced node, in trace order
    op_types: dict[str, str]
    kernels: dict[str, tuple[str, str, int, str, int]]  # compute node -> (op, shape, MACs, model key, weight bytes)
    models: dict[str, tuple[Any, str]]  # key -> (one-node model, the node's name inside it)


def _alone_plan(graph_model: Any, traced: list[TracedNode], source_convs: SourceConvs) -> _AlonePlan:
    nodes = {node.name: node for node in graph_model.graph.node}
    weights = {init.name: init for init in graph_model.graph.initializer}
    plan = _AlonePlan([t.name for t in traced], {t.name: t.op_type for t in traced}, {}, {})
    for node in traced:
        graph_node = nodes.get(node.name)
        if graph_node is None or node.op_type not in COMPUTE_OPS:
            continue
        shapes = input_shapes(graph_node, node, weights)
        model = _one_node_model(graph_model, graph_node, shapes, weights)
        key = _signature(model)
        plan.models.setdefault(key, (model, node.name))
        size = sum(_nbytes(weights[n]) for n in graph_node.input if n in weights)
        macs = node_macs(graph_node, shapes, node)
        if node.op_type in ("Conv", "FusedConv"):
            macs = source_convs.macs(graph_node, shapes, node, macs)
        plan.kernels[node.name] = (node.op_type, _describe(shapes), macs, key, size)
    return plan


class SourceConvs:
    """The source graph's convolutions, to count an optimized convolution's MACs at its real channel counts.

    ORT's NCHWc layout pass pads every convolution's channels to its vector block (8 floats on AVX2, 16 on
    AVX-512), so the optimized graph's weights, and the shapes its trace records, carry channels that
    are zero and depend on the CPU: a 24-channel convolution runs as 32 on AVX-512 and as 24 on AVX2.
    Counted on those shapes, a model's MACs would differ between the two. ORT neither merges nor splits
    convolutions, so each optimized one is matched to the first unclaimed source convolution of the same
    kernel, strides and dilations whose channels fit in its (padded) weight, in graph order, and counts
    that one's weight over its own traced output positions.
    """

    def __init__(self, weights: dict[tuple[Any, ...], list[tuple[int, ...]]]):
        self._weights = weights

    @classmethod
    def of(cls, source: Any) -> SourceConvs:
        initializers = {init.name: tuple(int(d) for d in init.dims) for init in source.graph.initializer}
        weights: dict[tuple[Any, ...], list[tuple[int, ...]]] = {}
        for graph_node in source.graph.node:
            if graph_node.op_type == "Conv" and len(graph_node.input) > 1 and graph_node.input[1] in initializers:
                dims = initializers[graph_node.input[1]]
                weights.setdefault(_conv_key(graph_node, dims), []).append(dims)
        return cls(weights)

    def macs(self, graph_node: Any, typed_shapes: Sequence[tuple[str, tuple[int, ...]]], node: TracedNode,
             counted: int) -> int:
        """The MACs of the source convolution this optimized one runs; `counted` where none matches."""
        if len(typed_shapes) < 2 or not node.output_shapes:
            return counted
        padded = typed_shapes[1][1]
        candidates = self._weights.get(_conv_key(graph_node, padded), [])
        for index, dims in enumerate(candidates):
            if all(real <= pad for real, pad in zip(dims[:2], padded[:2], strict=True)):
                del candidates[index]
                out = node.output_shapes[0]
                return int(out[0] * math.prod(out[2:]) * math.prod(dims))
        return counted


def _conv_key(graph_node: Any, weight_dims: tuple[int, ...]) -> tuple[Any, ...]:
    attrs = _attributes(graph_node)
    spatial = len(weight_dims) - 2
    return (tuple(weight_dims[2:]), tuple(attrs.get("strides", [1] * spatial)),
            tuple(attrs.get("dilations", [1] * spatial)))


def node_macs(graph_node: Any, typed_shapes: Sequence[tuple[str, tuple[int, ...]]], node: TracedNode) -> int:
    """Multiply-accumulates of one compute node at its input shapes (0 for an op it does not know)."""
    shapes = [shape for _, shape in typed_shapes]
    attrs = _attributes(graph_node)
    if node.op_type in ("MatMul", "FusedMatMul", "Gemm") and len(shapes) >= 2:
        a, b = list(shapes[0]), list(shapes[1])
        if attrs.get("transA"):
            a[-2:] = a[-1:-3:-1]
        if attrs.get("transB"):
            b[-2:] = b[-1:-3:-1]
        batch = math.prod(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))) if len(a) > 2 or len(b) > 2 else 1
        return int(batch * a[-2] * a[-1] * b[-1])
    if node.op_type in ("Conv", "FusedConv") and len(shapes) >= 2 and node.output_shapes:
        return int(math.prod(node.output_shapes[0]) * math.prod(shapes[1][1:]))
    if node.op_type == "Attention" and len(shapes) >= 2:  # packed qkv projection, then scores and context
        batch, tokens, width = shapes[0]
        hidden = shapes[1][1] // 3
        return int(batch * tokens * width * shapes[1][1] + 2 * batch * tokens * tokens * hidden)
    if node.op_type == "MultiHeadAttention" and len(shapes) >= 3:
        batch, tokens, hidden = shapes[0]
        return int(2 * batch * tokens * shapes[1][-2] * hidden)
    return 0


def _attributes(graph_node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in graph_node.attribute}


def input_shapes(graph_node: Any, node: TracedNode, weights: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of every non-empty input: a weight's from its initializer (ORT's trace leaves out the
    weights it prepacked), the others' from the trace, in order."""
    from onnx import helper

    traced = list(node.input_shapes)
    shapes = []
    for name in (n for n in graph_node.input if n):
        if name in weights:
            dims = tuple(int(d) for d in weights[name].dims)
            if traced and traced[0][1] == dims:
                traced.pop(0)
            dtype = helper.tensor_dtype_to_np_dtype(weights[name].data_type).name
            shapes.append(({"float32": "float"}.get(dtype, dtype), dims))
        else:
            shapes.append(traced.pop(0) if traced else ("float", ()))
    return shapes


def _one_node_model(model: Any, graph_node: Any, shapes: list[tuple[str, tuple[int, ...]]],
                    weights: dict[str, Any]) -> Any:
    """The node alone: its constant inputs kept as they are, the others graph inputs of the traced shapes."""
    from onnx import TensorProto, helper

    inputs, initializers = [], []
    for name, (dtype, shape) in zip((n for n in graph_node.input if n), shapes, strict=True):
        if name in weights:
            initializers.append(weights[name])
        else:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(TRACE_DTYPES.get(dtype, np.float32)))
            inputs.append(helper.make_tensor_value_info(name, elem, shape))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in graph_node.output if name]
    graph = helper.make_graph([graph_node], "alone", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _nbytes(tensor: Any) -> int:
    from onnx import helper

    return math.prod(tensor.dims) * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def _signature(model: Any) -> str:
    """Equal for nodes that run the same kernel on the same shapes (names and weight values aside: a
    kernel's time does not depend on the values, so equal blocks are timed once)."""
    import hashlib

    node = model.graph.node[0]
    digest = hashlib.sha256()
    digest.update(node.op_type.encode() + node.domain.encode())
    for attr in node.attribute:
        digest.update(attr.SerializeToString())
    for value in model.graph.input:
        digest.update(value.type.SerializeToString())
    for init in model.graph.initializer:
        digest.update(f"{init.data_type}:{list(init.dims)}".encode())
    return digest.hexdigest()


def _time_alone(model: Any, name: str, settings: TraceSettings, work: Path) -> float:
    import onnx

    path = work / "alone.onnx"
    onnx.save_model(model, str(path))
    traced = trace_kernels(path, settings, optimize=False)
    return sum(node.time_ms for node in traced if node.name == name)


def _time_cold(model: Any, settings: TraceSettings, work: Path) -> float | None:
    """The node's median time over copies of it that each read weights of their own, more than any cache
    holds together (None for a node without weights): what the kernel takes when its weights come from
    memory, as they do inside a model whose weights outgrow the last-level cache."""
    import onnx

    copies = _cold_copies(model)
    if copies is None:
        return None
    path = work / "cold.onnx"
    onnx.save_model(copies, str(path))
    names = {node.name for node in copies.graph.node}
    times = [node.time_ms for node in trace_kernels(path, settings, optimize=False) if node.name in names]
    return float(np.median(times)) if times else None


def _cold_copies(model: Any) -> Any:
    """The one-node model's node repeated, each copy on weights of its own: `COLD_BYTES` at least in all.

    Each copy's float weights are fresh random values of the original's scale: ONNX Runtime keeps equal
    initializers once, so copies of the same values would all read one cache-hot buffer.
    """
    from onnx import NodeProto, TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    node, weights = model.graph.node[0], list(model.graph.initializer)
    size = sum(_nbytes(tensor) for tensor in weights)
    if not size:
        return None
    nodes, tensors, outputs = [], [], []
    for index in range(min(_MAX_COPIES, max(2, -(-COLD_BYTES // size)))):
        renamed = {tensor.name: f"{tensor.name}.copy{index}" for tensor in weights}
        for tensor in weights:
            values = numpy_helper.to_array(tensor)
            if np.issubdtype(values.dtype, np.floating):
                values = (rng.standard_normal(values.shape) * (float(values.std()) or 1.0)).astype(values.dtype)
            tensors.append(numpy_helper.from_array(values, renamed[tensor.name]))
        copy = NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{node.name}.copy{index}"
        copy.input[:] = [renamed.get(name, name) for name in node.input]
        copy.output[:] = [f"{name}.copy{index}" if name else "" for name in node.output]
        nodes.append(copy)
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in copy.output if name]
    graph = helper.make_graph(nodes, "cold", list(model.graph.input), outputs, tensors)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _describe(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> str:
    return " @ ".join("x".join(str(d) for d in shape) for _, shape in shapes[:2])
