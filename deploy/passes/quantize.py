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


def quantize_qdq(model: onnx.ModelProto, calibration: Calibration) -> tuple[onnx.ModelProto, PassRecord]:
    """The Q/DQ int8 graph of `model`; the record counts the nodes whose inputs were quantized."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if is_qdq(model):
        return model, PassRecord("int8-qdq", 0)  # already quantized: never quantize a graph twice
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration.method]
    options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
               "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
               "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
               "CalibPercentile": calibration.percentile}
    reader: CalibrationDataReader = _Reader(calibration.feeds)
    with tempfile.TemporaryDirectory(prefix="qdq-") as work, _quiet():
        source, target = Path(work) / "float.onnx", Path(work) / "int8.onnx"
        onnx.save_model(model, str(source))
        try:
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=[*head_nodes(model), *layer_nodes(model, calibration.keep_float)],
                            calibrate_method=method, extra_options=options)
        except Exception as exc:  # the quantizer's own errors (shapes, unsupported ops)
            raise DeployError(f"int8 quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        quantized = onnx.load(str(target))
    scopes.fill_missing(quantized)  # each Q/DQ pair belongs to the layer it feeds
    dequantized = {out for node in quantized.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    fed = [node for node in quantized.graph.node if node.op_type in QUANTIZED_OPS
           and any(i in dequantized for i in node.input)]
    return quantized, PassRecord("int8-qdq", len(fed))


def _needs_calibration(model: object) -> int:
    raise DeployError("int8-qdq needs calibration samples: run it through run_passes(..., calibration=...)")


INT8_QDQ = register_pass(GraphPass(
    "int8-qdq",
    "int8 Q/DQ graph (onnxruntime.quantization, QDQ format): symmetric int8, per-channel weights on the output "
    "axis, Q/DQ on MatMul/Gemm/Conv inputs only (LayerNorm, Softmax, GELU, pooling and the head stay float); "
    "calibrated on --calib-dir images or the model's shipped training split; appended for --precision int8 on "
    "the targets that take a Q/DQ graph",
    _needs_calibration,
    "precision",
    calibrated=quantize_qdq,
))
