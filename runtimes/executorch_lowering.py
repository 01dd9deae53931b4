"""torch.export -> ExecuTorch edge program, shaped so XNNPACK takes the zoo's attention, pooling and reshapes.

`to_edge_transform_and_lower` decomposes every op its partitioners do not ask to keep into core ATen, and
XNNPACK's partitioner (ExecuTorch 1.5) then rejects several of the results. Measured on `hvt_ti_1` (224,
batch 1, static): the stock decomposition leaves 346 nodes on the portable CPU kernels in 63 delegated
subgraphs; the four decompositions below leave 79 (the 25 LayerNorms and their getitems, plus the mean)
in 27 subgraphs, with the same outputs (max error 7e-7 of the output scale):

- `scaled_dot_product_attention`: the stock math decomposition is `_safe_softmax` (eq/logical_not/any/where
  around the softmax, for fully masked rows) over `expand` + `bmm` with the scale split as two
  `mul.Scalar`s; none of those masking ops, expands or scalar multiplies are XNNPACK ops. Written here as
  q*scale @ k^T -> softmax -> @ v on 3-D batched matmuls (exact without a mask, which the zoo never passes).
- `unbind` (the packed q/k/v split), `select` (the cls token read out for the head) and `squeeze`: core
  ATen's `squeeze_copy` and `select_copy` are not XNNPACK ops; a slice + reshape is.
- `max_pool1d` (HVT's token pooling): core ATen turns it into `max_pool2d_with_indices`, which XNNPACK does
  not take; `max_pool2d` over a (1, k) window on a reshaped input it does.
- `mean` over the tokens of a (B, N, C) tensor (HVT's head): XNNPACK only averages the two inner dims of a
  4-D tensor, so it is taken as exactly that, over a (B, C, N, 1) view.
- `expand` that changes no size (the cls token's, at batch 1): a copy, which XNNPACK takes and removes. A
  real broadcast (the cls token at batch > 1) has no XNNPACK op and stays on the portable kernels.

LayerNorm stays on the portable kernels: ExecuTorch 1.5's XNNPACK partitioner has no LayerNorm, and
writing it out as mean/var arithmetic made `hvt_ti_1` 25 % slower (20.7 vs 16.2 ms at batch 1).

A dynamic batch dimension makes every reshape symbolic, which XNNPACK refuses; `infer_batch_in_views`
writes the one symbolic size of such a reshape as -1, which it accepts. Slices of a tensor with a dynamic
dimension it still refuses (the q/k/v split: 36 portable slices on a 12-block model), so a dynamic-batch
program delegates a little less than a static one.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import RuntimeAdapterError, TensorSpec, first_line

DELEGATE_IDS = {"xnnpack": "XnnpackBackend", "coreml": "CoreMLBackend"}
CALIBRATION_BATCH = 32  # calibration images per observed pass (HistogramObserver's cost is per call)
DECOMPOSITIONS = ("scaled_dot_product_attention", "unbind", "select", "squeeze", "max_pool1d", "mean", "expand")
# Nodes that move no data: `getitem` picks a delegate's or LayerNorm's output, `sym_size` reads a shape.
_BOOKKEEPING = ("getitem", "aten.sym_size.int", "executorch_call_delegate")


def decomposition_table() -> dict[Any, Callable[..., Any]]:
    """The ops this module writes out itself, for `ExportedProgram.run_decompositions`."""
    import torch

    aten = torch.ops.aten
    return {
        aten.scaled_dot_product_attention.default: _attention,
        aten.unbind.int: _unbind,
        aten.select.int: _select,
        aten.squeeze.dims: _squeeze_dims,
        aten.squeeze.dim: lambda x, dim: _squeeze_dims(x, [dim]),
        aten.max_pool1d.default: _max_pool1d,
        aten.mean.dim: _mean_dim,
        aten.expand.default: _expand,
    }


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,  # noqa: PLR0913 - aten's signature
               enable_gqa=False):
    if attn_mask is not None or dropout_p or is_causal or enable_gqa or q.dim() < 3:
        return NotImplemented  # the stock decomposition handles what the zoo never uses
    import torch

    aten = torch.ops.aten
    *lead, queries, depth = q.shape
    keys, width = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(depth) if scale is None else scale
    q3 = aten.mul.Tensor(aten.reshape.default(q, [-1, queries, depth]), scale)
    k3 = aten.reshape.default(k, [-1, keys, depth])
    v3 = aten.reshape.default(v, [-1, keys, width])
    weights = aten._softmax.default(aten.bmm.default(q3, aten.permute.default(k3, [0, 2, 1])), -1, False)
    return aten.reshape.default(aten.bmm.default(weights, v3), [*lead, queries, width])


def _unbind(x, dim=0):
    import torch

    aten = torch.ops.aten
    dim = dim % x.dim()
    shape = [size for i, size in enumerate(x.shape) if i != dim]
    return [aten.reshape.default(aten.slice.Tensor(x, dim, i, i + 1), shape) for i in range(x.shape[dim])]


def _select(x, dim, index):
    import torch

    aten = torch.ops.aten
    dim = dim % x.dim()
    index = index % x.shape[dim] if isinstance(index, int) else index
    shape = [size for i, size in enumerate(x.shape) if i != dim]
    return aten.reshape.default(aten.slice.Tensor(x, dim, index, index + 1), shape)


def _squeeze_dims(x, dims):
    import torch

    dims = {d % x.dim() for d in dims} if x.dim() else set()
    return torch.ops.aten.reshape.default(x, [size for i, size in enumerate(x.shape) if not (i in dims and size == 1)])


def _max_pool1d(x, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    import torch

    aten = torch.ops.aten
    stride = stride or kernel_size
    *lead, length = x.shape
    rows = aten.reshape.default(x, [*lead, 1, length])
    pooled = aten.max_pool2d.default(rows, [1, kernel_size[0]], [1, stride[0]], [0, padding[0]],
                                     [1, dilation[0]], ceil_mode)
    return aten.reshape.default(pooled, [*lead, pooled.shape[-1]])


def _mean_dim(x, dim, keepdim=False, dtype=None):
    dims = [d % x.dim() for d in dim] if isinstance(dim, (list, tuple)) else []
    if x.dim() != 3 or dims != [1] or dtype is not None:
        return NotImplemented
    import torch

    aten = torch.ops.aten
    batch, tokens, channels = x.shape
    grid = aten.reshape.default(aten.permute.default(x, [0, 2, 1]), [batch, channels, tokens, 1])
    pooled = aten.mean.dim(grid, [2, 3], True)
    return aten.reshape.default(pooled, [batch, 1, channels] if keepdim else [batch, channels])


def _expand(x, size, implicit=False):
    """An expand that changes no size (the cls token's at batch 1) as a copy XNNPACK takes and then drops."""
    if len(size) != x.dim() or any(new not in (-1, old) for new, old in zip(size, x.shape, strict=True)):
        return NotImplemented  # a real broadcast: no XNNPACK op for it, it stays on the portable kernels
    import torch

    return torch.ops.aten.clone.default(x)


def infer_batch_in_views(program) -> int:
    """Writes the one symbolic size of each reshape as -1 (XNNPACK takes that, not a symbol); returns how many."""
    import torch

    views = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.reshape.default}
    changed = 0
    graph = program.graph_module.graph
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in views:
            continue
        size = list(node.args[1])
        symbolic = [i for i, d in enumerate(size) if not isinstance(d, int)]
        if len(symbolic) == 1 and -1 not in size:
            size[symbolic[0]] = -1
            node.args = (node.args[0], size, *node.args[2:])
            changed += 1
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return changed


@dataclass(frozen=True)
class Delegation:
    """Which of an edge program's ops a delegate took, and which stayed on ExecuTorch's portable kernels."""

    backend: str
    subgraphs: int
    delegated_nodes: int
    portable_nodes: int  # data-moving nodes outside every delegate (bookkeeping nodes not counted)
    delegated: dict[str, int]  # op name -> count inside delegates
    portable: dict[str, int]  # op name -> count on the portable kernels

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "subgraphs": self.subgraphs, "delegated_nodes": self.delegated_nodes,
                "portable_nodes": self.portable_nodes, "delegated_ops": self.delegated, "portable_ops": self.portable}


def delegation(edge_program, backend: str) -> Delegation:
    """Op counts inside the delegates' subgraphs and outside them, by op (`aten.linear.default`).

    Counted from the graph's targets rather than with `executorch.devtools.backend_debug.get_delegation_info`,
    which names ops by parsing fx node names (`aten_slice_copy_tensor`) and imports pandas for a table.
    """
    graph_module = edge_program.graph_module
    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            subgraphs += 1
            lowered = getattr(graph_module, node.args[0].target)
            delegated.update(_op_name(inner.target) for inner in lowered.original_module.graph.nodes
                             if inner.op == "call_function" and _op_name(inner.target) not in _BOOKKEEPING)
        elif name not in _BOOKKEEPING:
            portable[name] += 1
    return Delegation(backend, subgraphs, sum(delegated.values()), sum(portable.values()),
                      dict(sorted(delegated.items())), dict(sorted(portable.items())))


def _op_name(target) -> str:
    """`aten.linear.default`, `aten.add.Tensor` for (edge) ATen ops; the function's name for the rest (`getitem`)."""
    if not callable(getattr(target, "name", None)):
        return getattr(target, "__name__", str(target))
    name = target.name().replace("::", ".")
    return name + ".default" if getattr(target, "_overloadname", None) == "default" else name


@dataclass(frozen=True)
class LoweringJob:
    """What one `.pte` is made from: the module, its input, the precision and the methods to lower."""

    module: Any  # torch.nn.Module (BatchNorm folded)
    input_specs: list[TensorSpec]
    precision: str
    methods: dict[str, int]  # method name -> its batch (the largest one, for a dynamic batch)
    dynamic: bool
    calibration: list[dict[str, np.ndarray]] | None = None
    keep_float: tuple[str, ...] = ()  # int8: module paths the quantizer leaves in float


@dataclass(frozen=True)
class Lowered:
    program: bytes  # the .pte file
    details: dict[str, Any]
    etrecord: Any = None  # executorch.devtools.ETRecord when asked for


def lower(job: LoweringJob, delegate: str, etrecord: bool = False) -> Lowered:
    """torch.export each method, lower them together (shared weights) to `delegate`, serialise the program."""
    from executorch.exir import to_edge_transform_and_lower
    from executorch.version import __version__

    started = time.perf_counter()
    module, details = _precision_module(job, delegate)
    programs = {name: _exported(module, job, batch) for name, batch in job.methods.items()}
    details["views_with_inferred_batch"] = sum(_views for _, _views in programs.values())
    try:
        edge = to_edge_transform_and_lower({name: program for name, (program, _) in programs.items()},
                                           partitioner=[_partitioner(delegate, job.precision)],
                                           generate_etrecord=etrecord)
        delegated = {name: delegation(edge.exported_program(name), DELEGATE_IDS[delegate]).to_json()
                     for name in job.methods}
        manager = edge.to_executorch()
    except Exception as exc:
        raise RuntimeAdapterError(f"ExecuTorch could not lower the model to {delegate}: {first_line(exc)}") from exc
    details.update(executorch=__version__, decompositions=list(DECOMPOSITIONS), delegation=delegated,
                   lowering_s=round(time.perf_counter() - started, 1))
    return Lowered(bytes(manager.buffer), details, manager.get_etrecord() if etrecord else None)


def _precision_module(job: LoweringJob, delegate: str):
    """The module to export for the precision, and what the manifest says about how it was made."""
    if job.precision == "int8":
        return quantize_int8(job)
    if job.precision == "fp16" and delegate == "xnnpack":
        return half_precision(job.module), {"compute": "fp16 (XNNPACK), fp32 input and output"}
    if job.precision == "fp16":
        return job.module, {"compute": "fp16 (Core ML compute precision)"}
    return job.module, {"compute": "fp32"}


def _exported(module, job: LoweringJob, batch: int):
    """(program, reshapes given an inferred batch): `batch` static, or 1..batch when the job is dynamic."""
    import torch

    example = _example(job.input_specs, batch)
    dynamic = None
    if job.dynamic:
        dim = torch.export.Dim("batch", min=1, max=batch)
        dynamic = tuple({0: dim} for _ in example)
    try:
        with torch.no_grad():
            program = torch.export.export(module, example, dynamic_shapes=dynamic)
    except Exception as exc:
        raise RuntimeAdapterError(f"torch.export failed for ExecuTorch: {first_line(exc)}") from exc
    program = program.run_decompositions(decomposition_table())
    return program, infer_batch_in_views(program) if job.dynamic else 0


def _example(specs: list[TensorSpec], batch: int) -> tuple:
    import torch

    return tuple(torch.zeros(spec.shape_at(batch), dtype=getattr(torch, spec.dtype)) for spec in specs)


def _partitioner(delegate: str, precision: str):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    return CoreMLPartitioner(compile_specs=CoreMLBackend.generate_compile_specs(compute_precision=compute))


def half_precision(module):
    """The module in fp16 between fp32 casts, so the program's input and output stay fp32."""
    import torch

    class HalfPrecision(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = copy.deepcopy(inner).half().eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return HalfPrecision(module).eval()


def quantize_int8(job: LoweringJob):
    """PT2E static int8 for XNNPACK: the decomposed graph, observed on the calibration feeds, converted."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao import __version__ as torchao_version
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not job.calibration:
        raise RuntimeAdapterError("executorch int8 needs calibration data (BuildOptions.calibration: a list of "
                                  "feed dicts, e.g. from --calib-dir)")
    name = job.input_specs[0].name
    samples = torch.from_numpy(np.concatenate([np.asarray(feed[name], dtype=np.float32) for feed in job.calibration]))
    # Observed over a dynamic batch so the calibration runs CALIBRATION_BATCH images per pass; the converted
    # graph is exported again at each method's batch.
    calibration = LoweringJob(job.module, job.input_specs, "fp32", {}, dynamic=True)
    observed, _ = _exported(job.module, calibration, max(2, CALIBRATION_BATCH))
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if job.keep_float:
        quantizer.set_filter_function(_outside(job.keep_float))
    prepared = prepare_pt2e(observed.module(), quantizer)
    with torch.no_grad():
        for chunk in samples.split(CALIBRATION_BATCH):
            prepared(chunk)
    quantization: dict[str, Any] = {"method": "PT2E static, XNNPACKQuantizer symmetric int8, per-channel weights",
                                    "calibration_samples": len(samples), "torchao": torchao_version}
    if job.keep_float:
        quantization["float_modules"] = list(job.keep_float)
    details = {"compute": "int8 (XNNPACK), fp32 where not quantized", "quantization": quantization}
    return convert_pt2e(prepared), details


def _outside(modules: tuple[str, ...]) -> Callable[[Any], bool]:
    """The quantizer's filter: a node is quantized unless its innermost module is one of `modules` (the
    exported graph's `nn_module_stack` names modules by the same paths as the ONNX exporter's scopes)."""
    excluded = set(modules)

    def quantize(node) -> bool:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        return not stack or stack[-1][0] not in excluded

    return quantize
