"""The pooling pass: fires where it should, leaves other graphs alone, and keeps outputs exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from deploy.errors import DeployError
from deploy.export.onnx_export import clean_up, export_onnx, op_histogram
from deploy.export.targets import get_target, resolve_passes
from deploy.passes import available_passes, run_passes


def run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def token_pool_graph(op_type, kernel, stride, pads, ceil_mode, transposed=True, count_include_pad=0):
    """(B, N, C) tokens -> [Transpose] -> 1-D pool -> [Transpose], as the exporter writes it."""
    attrs = {"kernel_shape": [kernel], "strides": [stride], "pads": list(pads), "ceil_mode": ceil_mode}
    if op_type == "AveragePool":
        attrs["count_include_pad"] = count_include_pad
    nodes = []
    if transposed:
        nodes.append(helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]))
    nodes.append(helper.make_node(op_type, ["t" if transposed else "x"], ["p"], **attrs))
    if transposed:
        nodes.append(helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 1]))
    else:
        nodes.append(helper.make_node("Identity", ["p"], ["y"]))
    graph = helper.make_graph(
        nodes, "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", "c"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    # onnxruntime 1.31 reads IR version 13 at most; onnx 1.23 writes 14 by default.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


pool_cases = st.fixed_dictionaries({
    "op_type": st.sampled_from(["MaxPool", "AveragePool"]),
    "batch": st.integers(1, 3),
    "tokens": st.integers(8, 40),
    "width": st.integers(1, 12),
    "kernel": st.integers(1, 5),
    "stride": st.integers(1, 3),
    "pad": st.integers(0, 2),
    "ceil_mode": st.sampled_from([0, 1]),
    "transposed": st.booleans(),
    "count_include_pad": st.sampled_from([0, 1]),
})


@settings(max_examples=40, deadline=None)
@given(case=pool_cases)
def test_pool_pass_preserves_outputs(case):
    pad = min(case["pad"], case["kernel"] // 2)  # ONNX requires pads smaller than the kernel
    proto = token_pool_graph(case["op_type"], case["kernel"], case["stride"], (pad, pad), case["ceil_mode"],
                             case["transposed"], case["count_include_pad"])
    shape = (case["batch"], case["tokens"], case["width"]) if case["transposed"] else \
        (case["batch"], case["width"], case["tokens"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rewritten, records = run_passes(proto, ["pool1d-to-2d"])
    assert records[0].changed == 1
    ops = op_histogram(rewritten)
    assert "Transpose" not in ops and ops.get("Unsqueeze") == 1 and ops.get("Squeeze") == 1
    pool = next(n for n in rewritten.graph.node if n.op_type == case["op_type"])
    assert len(helper.get_attribute_value(next(a for a in pool.attribute if a.name == "kernel_shape"))) == 2
    before, after = run(proto, x), run(rewritten, x)
    if case["op_type"] == "MaxPool":
        assert np.array_equal(before, after)
    else:
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * max(1.0, float(np.abs(before).max())))


def test_pool_pass_is_idempotent():
    rewritten, _ = run_passes(token_pool_graph("MaxPool", 3, 2, (0, 0), 0), ["pool1d-to-2d"])
    again, records = run_passes(rewritten, ["pool1d-to-2d"])
    assert records[0].changed == 0
    assert op_histogram(again) == op_histogram(rewritten)


def test_pool_pass_leaves_2d_pooling_alone():
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])], "pool2d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    _, records = run_passes(proto, ["pool1d-to-2d"])
    assert records[0].changed == 0


@pytest.fixture(scope="module")
def hvt_s_3_onnx():
    import models

    model = models.create_model("hvt_s_3")
    return model, clean_up(export_onnx(model, (3, 224, 224), opset=20))


@pytest.mark.slow
def test_pool_pass_on_hvt_s_3_changes_three_places_bit_exactly(hvt_s_3_onnx):
    _, proto = hvt_s_3_onnx
    rewritten, records = run_passes(proto, ["pool1d-to-2d"])
    assert records[0].changed == 3  # one pool per stage boundary: after blocks 0, 4 and 8
    assert op_histogram(proto)["MaxPool"] == op_histogram(rewritten)["MaxPool"] == 3
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    name = proto.graph.input[0].name
    a = ort.InferenceSession(proto.SerializeToString()).run(None, {name: x})[0]
    b = ort.InferenceSession(rewritten.SerializeToString()).run(None, {name: x})[0]
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_pool_pass_leaves_an_unpooled_model_untouched():
    from models.hvt import HVT

    model = HVT(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, pool_block_width=None,
                num_classes=5).eval()
    proto = clean_up(export_onnx(model, (3, 32, 32), opset=20))
    rewritten, records = run_passes(proto, ["pool1d-to-2d"])
    assert records[0].changed == 0
    assert op_histogram(rewritten) == op_histogram(proto)


def test_every_default_pass_exists():
    names = set(available_passes())
    for target in ("onnxruntime", "openvino", "tensorrt"):
        assert set(get_target(target).default_passes) <= names


def test_pass_selection_syntax():
    profile = get_target("onnxruntime")
    default = list(profile.default_passes)
    assert "pool1d-to-2d" in default
    assert resolve_passes(profile, "default") == resolve_passes(profile, None) == default
    assert resolve_passes(profile, "none") == []
    assert resolve_passes(profile, "-pool1d-to-2d") == [p for p in default if p != "pool1d-to-2d"]
    assert resolve_passes(profile, "+attention-onnx") == [*default, "attention-onnx"]
    assert resolve_passes(profile, "a,b") == ["a", "b"]
    with pytest.raises(DeployError):
        resolve_passes(profile, "a,-b")
    with pytest.raises(DeployError, match="auto"):
        resolve_passes(profile, "auto")  # measured by the export stage, not a list


def test_unknown_pass_is_a_clear_error():
    with pytest.raises(DeployError, match="unknown pass 'pool1d-to-3d'.*did you mean pool1d-to-2d"):
        run_passes(token_pool_graph("MaxPool", 3, 2, (0, 0), 0), ["pool1d-to-3d"])
