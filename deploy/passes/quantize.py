"""`int8-qdq`: a Q/DQ int8 graph for runtimes that quantize explicitly (ONNX Runtime CPU, TensorRT).

Made with `onnxruntime.quantization.quantize_static` (QDQ format) on calibration samples, with a recipe
that suits transformers and TensorRT's explicit-quantization rules:
- symmetric int8 for weights and activations: every zero point is 0;
- weights per channel along the output axis (MatMul's B (K, N): axis 1; Conv's (O, I, kh, kw) and Gemm's:
  axis 0), stored once as int8 initializers behind a DequantizeLinear (no Q/DQ pair on a constant);
- Q/DQ only on the inputs of MatMul, Gemm and Conv: their outputs, and so LayerNorm, Softmax, GELU, the
  token pooling and the residual adds, stay float; biases stay float;
- the classifier head (the MatMul/Gemm nearest the graph output) stays float;
- calibration by minmax (default), entropy or percentile.

Why ONNX Runtime's quantizer and not NVIDIA ModelOpt's `modelopt.onnx.quantization`: ModelOpt's
`nvidia-modelopt[onnx]` 0.47 pulls `onnxruntime-gpu` 1.24 and onnx 1.21 into the install, replacing
the CPU onnxruntime and downgrading onnx (seen here with `pip install --dry-run`), so it cannot sit in
the default install; `quantize_static` ships with onnxruntime. It calibrates `hvt_s_1` on 64 samples in
a few seconds here, and its graph runs on ONNX Runtime's CPU EP and is the form TensorRT parses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from ..errors import DeployError
from . import scopes
from .base import GraphPass, register_pass
from .record import PassRecord

Method = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[Method, ...] = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
# Ops a classifier's output passes through after its last MatMul/Gemm (flatten, bias, a cast back to fp32).
_PASS_THROUGH = {"Add", "Reshape", "Flatten", "Squeeze", "Identity", "Cast"}


@dataclass(frozen=True)
class Calibration:
    """Calibration samples (one feed per sample), how to turn their ranges into scales, and the layers (PyTorch
    module paths, `blocks.1.attn.qkv`) whose MatMul/Gemm/Conv stay float (`--precision auto`'s mixed int8)."""

    feeds: Sequence[dict[str, np.ndarray]]
    method: Method = "minmax"
    percentile: float = 99.999
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DeployError(f"--calib-method {self.method!r}: one of {', '.join(METHODS)}")
        if not self.feeds:
            raise DeployError("int8 needs calibration samples (--calib-dir, or a model with a shipped dataset)")


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The MatMul/Gemm nodes that compute the logits: walking back from each graph output."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found, frontier = [], [o.name for o in model.graph.output]
    while frontier:
        node = producer.get(frontier.pop())
        if node is None:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node.name)
        elif node.op_type in _PASS_THROUGH:
            frontier.extend(node.input)
    return found


def layer_nodes(model: onnx.ModelProto, modules: Sequence[str]) -> list[str]:
    """The MatMul/Gemm/Conv nodes of the PyTorch modules `modules` (exact module paths, from the name scopes)."""
    wanted = set(modules)
    return [node.name for node in model.graph.node
            if node.op_type in QUANTIZED_OPS and scopes.module_path(node) in wanted]


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The quantizer logs a "please pre-process" warning and draws calibration progress on stdout.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class QdqRecipe:
    """How the Q/DQ graph is made beyond TensorRT's explicit-quantization rules (the default, all off): the
    changes that ONNX Runtime's CPU execution provider runs faster (`CPU_RECIPE`, measured in `int8-qdq-cpu`).

    - `unsigned_activations`: activations as asymmetric uint8 (weights stay symmetric int8): x86's int8 dot
      products (VPMADDUBSW, VNNI's VPDPBUSD) multiply u8 by s8, and ONNX Runtime's MLAS fuses QLinearConv for a
      depthwise convolution only with u8 activations. TensorRT needs every zero point 0, so its graph keeps s8.
    - `quantize_conv`: Conv outputs and biases quantized too, so that ONNX Runtime fuses DQ-Conv-Q into an int8
      QLinearConv. Without it every Conv (CvT's depthwise q/k/v projections, the patch embeddings) ran as a
      float Conv behind DequantizeLinear nodes: slower than leaving it float.
    - `share`: one QuantizeLinear per tensor, its int8 moved through the data-movement ops (`MOVES`) to every
      consumer, and a MatMul/Conv output quantized only where it feeds another quantized layer: the attention's
      packed qkv output is quantized once instead of once per q, k and v path, and no float round trip
      (DequantizeLinear, reshapes in float, QuantizeLinear) is left between neighbouring MatMuls.
    """

    unsigned_activations: bool = False
    quantize_conv: bool = False
    share: bool = False


MOVES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Flatten")


def quantize_qdq(model: onnx.ModelProto, calibration: Calibration,
                 recipe: QdqRecipe = QdqRecipe(), name: str = "int8-qdq") -> tuple[onnx.ModelProto, PassRecord]:
    """The Q/DQ int8 graph of `model`; the record counts the nodes whose inputs were quantized."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if is_qdq(model):
        return model, PassRecord(name, 0)  # already quantized: never quantize a graph twice
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration.method]
    float_outputs = [op for op in QUANTIZED_OPS if not (recipe.share or (recipe.quantize_conv and op == "Conv"))]
    if recipe.share:
        float_outputs.append("Gemm")
    options = {"ActivationSymmetric": not recipe.unsigned_activations, "WeightSymmetric": True,
               "QuantizeBias": recipe.quantize_conv, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
               "OpTypesToExcludeOutputQuantization": float_outputs, "CalibPercentile": calibration.percentile}
    reader: CalibrationDataReader = _Reader(calibration.feeds)
    with tempfile.TemporaryDirectory(prefix="qdq-") as work, _quiet():
        source, target = Path(work) / "float.onnx", Path(work) / "int8.onnx"
        onnx.save_model(model, str(source))
        try:
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=[*QUANTIZED_OPS, *(MOVES if recipe.share else ())], per_channel=True,
                            activation_type=QuantType.QUInt8 if recipe.unsigned_activations else QuantType.QInt8,
                            weight_type=QuantType.QInt8,
                            nodes_to_exclude=[*head_nodes(model), *layer_nodes(model, calibration.keep_float)],
                            calibrate_method=method, extra_options=options)
        except Exception as exc:  # the quantizer's own errors (shapes, unsupported ops)
            raise DeployError(f"int8 quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        quantized = onnx.load(str(target))
    if recipe.share:
        quantized = _drop_unshared_outputs(quantized)
    scopes.fill_missing(quantized)  # each Q/DQ pair belongs to the layer it feeds
    dequantized = {out for node in quantized.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    fed = [node for node in quantized.graph.node if node.op_type in QUANTIZED_OPS
           and any(i in dequantized for i in node.input)]
    return quantized, PassRecord(name, len(fed))


def _drop_unshared_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the output Q/DQ pair of each MatMul/Conv whose int8 reaches no quantized layer: where only float
    ops (LayerNorm, GELU, the residual Add) read it, the pair is a round trip that costs time and adds noise."""
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for tensor in node.input:
            users.setdefault(tensor, []).append(node)
    outputs = {o.name for o in model.graph.output}

    def reaches_int8(tensor: str, depth: int = 0) -> bool:
        return any(user.op_type in (*QUANTIZED_OPS, "QuantizeLinear")
                   or (user.op_type in MOVES and depth < 8 and any(reaches_int8(o, depth + 1) for o in user.output))
                   for user in users.get(tensor, ()))

    dropped: set[str] = set()
    renamed: dict[str, str] = {}
    for node in nodes:
        source = producer.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if source is None or source.op_type not in QUANTIZED_OPS:
            continue
        readers = users.get(node.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" or r.output[0] in outputs for r in readers):
            continue
        if any(reaches_int8(r.output[0]) for r in readers):
            continue
        dropped.update([node.name, *(r.name for r in readers)])
        renamed.update({r.output[0]: node.input[0] for r in readers})
    kept = [node for node in nodes if node.name not in dropped]
    for node in kept:
        node.input[:] = [renamed.get(tensor, tensor) for tensor in node.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    # the dropped pairs' scales and zero points: left in, ONNX Runtime warns once per initializer at every load
    read = {tensor for node in kept for tensor in node.input}
    unread = [t for t in model.graph.initializer if t.name not in read and t.name not in outputs]
    for tensor in unread:
        model.graph.initializer.remove(tensor)
    return model


def _needs_calibration(model: object) -> int:
    raise DeployError("int8-qdq needs calibration samples: run it through run_passes(..., calibration=...)")


INT8_QDQ = register_pass(GraphPass(
    "int8-qdq",
    "int8 Q/DQ graph (onnxruntime.quantization, QDQ format) under TensorRT's explicit-quantization rules: symmetric "
    "int8, per-channel weights on the output axis, Q/DQ on MatMul/Gemm/Conv inputs only (LayerNorm, Softmax, GELU, "
    "pooling and the head stay float); calibrated on --calib-dir images or the model's shipped training split; "
    "appended for --precision int8 on TensorRT",
    _needs_calibration,
    "precision",
    calibrated=quantize_qdq,
))


# ONNX Runtime's CPU execution provider: u8 activations and quantized Convs measured faster on all four families
# with the real-data gate kept; sharing one QuantizeLinear per tensor on HVT and DeiT, within noise on CvT and
# ViT-ResNAS (scripts/bench_int8_recipe.py; figures in README "int8"), so one recipe serves all.
CPU_RECIPE = QdqRecipe(unsigned_activations=True, quantize_conv=True, share=True)


def _quantize_for_cpu(model: onnx.ModelProto, calibration: Calibration) -> tuple[onnx.ModelProto, PassRecord]:
    return quantize_qdq(model, calibration, CPU_RECIPE, name="int8-qdq-cpu")


INT8_QDQ_CPU = register_pass(GraphPass(
    "int8-qdq-cpu",
    "int8 Q/DQ graph for ONNX Runtime's CPU execution provider: as int8-qdq, but activations asymmetric uint8 (x86's "
    "u8 x s8 int8 products; MLAS's int8 depthwise convolution), Conv outputs and biases quantized so that every "
    "Conv runs as QLinearConv (CvT's depthwise projections included), and one QuantizeLinear per tensor moved in "
    "int8 through reshapes and transposes, with no float round trip between neighbouring MatMuls; appended for "
    "--precision int8 on onnxruntime",
    _needs_calibration,
    "precision",
    calibrated=_quantize_for_cpu,
))
