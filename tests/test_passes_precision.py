"""fp16 graphs with fp32 islands: what stays fp32, what the outputs lose, and the export route.

Tolerance: the precision gate's own (`TOLERANCES["fp16"]`: max abs error 2e-2 of the output scale,
cosine >= 0.999). fp16 keeps 11 significant bits, a relative rounding of 2^-11 ~ 4.9e-4 per value;
a ViT block rounds each activation a handful of times (projections, GELU, residual adds) and the errors
add roughly as a random walk over 12 blocks, which lands around 1e-3 of the logit scale in practice
(DeiT-S measured 7.8e-4). 2e-2 leaves an order of magnitude for trained weights with larger
activations, while an overflow, a lost island or a wrong cast fails it by far (inf/NaN, or errors of
order 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import small_hvt
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploy.export.onnx_export import clean_up, export_onnx, op_histogram
from deploy.export.parity import TOLERANCES, compare
from deploy.export.targets import get_target
from deploy.passes import run_passes
from deploy.passes.precision import KEEP_FP32


def run(proto: onnx.ModelProto, feeds) -> np.ndarray:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def block_graph(width: int, tokens: int) -> onnx.ModelProto:
    """LayerNorm -> Linear -> Gelu -> Linear -> self-attention scores -> Softmax -> token mean."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1, epsilon=1e-6),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Gelu", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["z"]),
        helper.make_node("Transpose", ["z"], ["zt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["z", "zt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "z"], ["mixed"]),
        helper.make_node("ReduceMean", ["mixed", "axes"], ["y"], keepdims=0),
    ]
    inits = [init("g", width), init("b", width), init("w1", width, 2 * width), init("w2", 2 * width, width),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", tokens,
                                                                                                     width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def tensor_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return types


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), tokens=st.integers(2, 12), width=st.integers(4, 24))
def test_fp16_convert_keeps_islands_and_io_in_fp32(batch, tokens, width):
    proto = block_graph(width, tokens)
    converted, records = run_passes(proto, ["fp16-convert"])
    assert records[0].changed >= 5  # MatMuls, Gelu, Transpose now compute in fp16
    onnx.checker.check_model(converted)
    types = tensor_types(converted)
    fp16, fp32 = TensorProto.FLOAT16, TensorProto.FLOAT
    for node in converted.graph.node:
        if node.op_type in KEEP_FP32:  # the island: fp32 in (data input), fp32 out
            assert types[node.input[0]] == fp32 and types[node.output[0]] == fp32, node.op_type
        elif node.op_type in ("MatMul", "Gelu"):
            assert types[node.output[0]] == fp16, node.op_type
    assert types["x"] == fp32 and types["y"] == fp32  # feeds and parity unchanged
    assert types["w1"] == fp16 and types["w2"] == fp16
    x = np.random.default_rng(batch).standard_normal((batch, tokens, width)).astype(np.float32)
    report = compare(run(proto, {"x": x}), run(converted, {"x": x}), TOLERANCES["fp16"])
    assert report.passed, report.reason
    again, records = run_passes(converted, ["fp16-convert"])
    assert records[0].changed == 0 and op_histogram(again) == op_histogram(converted)  # idempotent


def test_fp16_route_is_appended_for_onnxruntime_and_tensorrt_only():
    assert get_target("onnxruntime").precision_passes["fp16"] == ("fp16-convert",)
    assert get_target("tensorrt").precision_passes["fp16"] == ("fp16-convert",)
    assert "fp16" in get_target("onnxruntime").precisions
    # OpenVINO compresses weights itself; its ONNX graph stays fp32.
    assert "fp16" not in get_target("openvino").precision_passes


@pytest.mark.slow
def test_tensorrt_fp16_graph_from_the_default_profile():
    """What the export stage hands TensorRT for fp16: the default passes, then the fp16 conversion."""
    model = small_hvt()
    proto = clean_up(export_onnx(model, (3, 32, 32), opset=20))
    profile = get_target("tensorrt")
    converted, records = run_passes(proto, [*profile.default_passes, *profile.precision_passes["fp16"]])
    assert records[-1].name == "fp16-convert" and records[-1].changed > 0
    ops = op_histogram(converted)
    assert ops["LayerNormalization"] == 5 and ops["Softmax"] == 2  # fused ops, kept in fp32 by the islands
    assert ops["Cast"] >= 2 * (ops["LayerNormalization"] + ops["Softmax"])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    report = compare(reference, run(converted, {"input": x}), TOLERANCES["fp16"])
    assert report.passed, report.reason


@pytest.mark.slow
def test_export_onnxruntime_fp16_passes_the_fp16_gate(tmp_path):
    from deploy.export import ExportRequest, export

    result = export(ExportRequest("hvt_digits", "onnxruntime", "fp16", out=tmp_path, batch=(1, 2)))
    manifest = result.manifest
    assert result.artifact_dir.name == "onnxruntime-fp16"
    assert manifest.parity.passed, manifest.parity.reason
    assert manifest.parity.tolerance["max_abs_rel"] == TOLERANCES["fp16"].max_abs_rel
    assert manifest.onnx.passes[-1].name == "fp16-convert"
    proto = onnx.load(str(result.artifact_dir / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert sum(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer) > 10
