"""Core ML conversion: nn.Module -> torch.export -> coremltools -> ML program, and what a converted program holds.

Why torch.export and not jit.trace: with torch 2.13 and coremltools 9.0, converting a traced HVT
failed on a reshape with traced sizes, while the exported, decomposed program converted.

coremltools >= 8.2 (the `coreml` extra): 8.0 asserts that `inputs` is None for an `ExportedProgram`, and 8.1
accepts named inputs but keeps the program's argument name (seen with torch 2.13: "x", not "input"). The
backend checks the converted program's input and output names (`describe_mlprogram`), so a coremltools that
names them otherwise is one error, not a model the export stage cannot feed.

`describe_mlprogram` reads a saved program's spec without loading the model, so it works on Linux, where
prediction does not.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import EngineLoadError, ModelSource, RuntimeAdapterError, TensorSpec, first_line

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
QUANTIZED_WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


def compute_units(name: str | None):
    import coremltools as ct

    name = (name or "ALL").upper()
    if name not in COMPUTE_UNITS:
        raise RuntimeAdapterError(f"Core ML compute_units {name!r} is not one of {', '.join(COMPUTE_UNITS)}")
    return ct.ComputeUnit[name]


def deployment_target(name: str | None):
    """`ct.target` member for a name like "iOS17" or "macOS15"; None keeps coremltools' default."""
    import coremltools as ct

    if name is None:
        return None
    targets = ct.target.__members__
    if name not in targets:
        raise RuntimeAdapterError(
            f"Core ML minimum_deployment_target {name!r} is unknown; use one of {', '.join(targets)}"
        )
    return targets[name]


def _dtype_name(proto_value: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(proto_value).lower()


def _walk_ops(block):
    """All operations of a MIL block, including those in nested blocks (cond, while_loop)."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _feature(feature) -> dict[str, Any]:
    from coremltools.proto import FeatureTypes_pb2

    array = feature.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    info = {"name": feature.name, "shape": tuple(int(d) for d in array.shape), "dtype": dtype}
    if array.HasField("enumeratedShapes"):
        info["enumerated_shapes"] = [tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes]
    return info


def describe_mlprogram(path: str | Path) -> dict[str, Any]:
    """What a converted ML program contains: ops, inputs/outputs and compute precision.

    Reads the spec only (no model load), so it works on Linux where prediction does not.
    """
    import coremltools as ct

    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:
        raise EngineLoadError(f"cannot read {path} as a Core ML model: {first_line(exc)}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise EngineLoadError(f"{path} is a Core ML {spec.WhichOneof('Type')}, not an ML program")
    function = spec.mlProgram.functions["main"]
    ops = list(_walk_ops(function.block_specializations[function.opset]))
    op_counts = Counter(op.type for op in ops)
    dtypes = Counter(_dtype_name(out.type.tensorType.dataType) for op in ops if op.type != "const"
                     for out in op.outputs if out.type.WhichOneof("type") == "tensorType")
    return {
        "spec_version": spec.specificationVersion,
        "opset": function.opset,
        "inputs": [_feature(f) for f in spec.description.input],
        "outputs": [_feature(f) for f in spec.description.output],
        "ops": dict(op_counts),
        "op_types": sorted(op_counts),
        "activation_dtypes": dict(dtypes),
        "precision": _precision(dtypes),
        "quantized_weights": any(op in op_counts for op in QUANTIZED_WEIGHT_OPS),
        "fused_attention": "scaled_dot_product_attention" in op_counts,
    }


def _precision(dtypes: Counter) -> str:
    floats = {name for name in dtypes if name.startswith(("float", "bfloat"))}
    # fp16 programs keep fp32 only at the casts around fp32 inputs and outputs.
    if "float16" in floats:
        return "fp16"
    return "fp32" if "float32" in floats else "unknown"


def convert(source: ModelSource, batch: int, batches: list[int], precision: str, units, target):
    """ct.convert of the exported module; several `batches` make the batch dim enumerated."""
    import coremltools as ct
    import torch

    # A batch-1 example would specialise a dynamic batch dim to 1: trace with the largest one.
    example_batch = max(batches) if len(batches) > 1 else batch
    example = tuple(torch.zeros(spec.shape_at(example_batch), dtype=getattr(torch, spec.dtype))
                    for spec in source.input_specs)
    dynamic = None
    if len(batches) > 1:
        dim = torch.export.Dim("batch", min=min(batches), max=max(batches))
        dynamic = tuple({0: dim} for _ in example)
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(source.module.eval(), example,
                                          dynamic_shapes=dynamic).run_decompositions({})
    except Exception as exc:
        hint = "; try batch_shapes='static'" if dynamic else ""
        raise RuntimeAdapterError(f"torch.export failed for Core ML: {first_line(exc)}{hint}") from exc
    if target is not None and target >= ct.target.iOS18:
        fold_attention_scale(program)
    inputs = [ct.TensorType(name=spec.name, shape=_input_shape(spec, batch, batches), dtype=np.float32)
              for spec in source.input_specs]
    outputs = [ct.TensorType(name=name, dtype=np.float32) for name in source.output_names]
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    try:
        with _quiet_progress():
            return ct.convert(program, convert_to="mlprogram", inputs=inputs, outputs=outputs,
                              compute_precision=compute, compute_units=units,
                              minimum_deployment_target=target)
    except Exception as exc:
        raise RuntimeAdapterError(f"coremltools could not convert the model: {first_line(exc)}") from exc


def fold_attention_scale(program) -> int:
    """Pre-scale q where attention has an explicit `scale`, so iOS 18 keeps it as one fused op.

    coremltools lowers `aten.scaled_dot_product_attention` to Core ML's fused op only without a `scale`
    argument (its torch frontend decomposes it into matmul + softmax otherwise); the fused op scales by
    1/sqrt(head_dim). CvT's official scale is dim ** -0.5 over the stage width, so q * (scale * sqrt(head_dim))
    with the default scale is the same attention. Returns the number of attention nodes rewritten.
    """
    import torch

    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    graph, changed = program.graph_module.graph, 0
    for node in list(graph.nodes):
        scale = node.kwargs.get("scale") if node.target is sdpa else None
        if not isinstance(scale, float) or len(node.args) > 3 or set(node.kwargs) - {"scale"}:
            continue  # no explicit scale, or a mask/dropout/causal argument: left as it is
        query = node.args[0]
        factor = scale * float(query.meta["val"].shape[-1]) ** 0.5
        with graph.inserting_before(node):
            scaled = graph.call_function(torch.ops.aten.mul.Tensor, (query, factor))
        scaled.meta["val"] = query.meta["val"]
        node.args = (scaled, *node.args[1:])
        node.kwargs = {}
        changed += 1
    if changed:
        program.graph_module.recompile()
    return changed


def _input_shape(spec: TensorSpec, batch: int, batches: list[int]):
    import coremltools as ct

    if len(batches) == 1:
        return spec.shape_at(batch)
    return ct.EnumeratedShapes(shapes=[spec.shape_at(b) for b in batches],
                               default=spec.shape_at(batch))


def quantize_weights(mlmodel, weight_threshold: int):
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", weight_threshold=int(weight_threshold)))
    with _quiet_progress():
        return cto.linear_quantize_weights(mlmodel, config=config)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """coremltools draws tqdm progress bars on stderr for every pass: keep the CLI's output to what was asked."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield
