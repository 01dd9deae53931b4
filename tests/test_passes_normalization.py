"""Normalisation, activation and convolution passes on hand-built graphs with the decomposed forms.

Our exporter already writes LayerNormalization/Gelu and folds BatchNorm in PyTorch, so these passes
are tested on the forms older exporters and foreign files hold: each fires on them, leaves look-alikes
alone, keeps outputs (fp32, 1e-5 of the output scale) and changes nothing on a second run.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploy.export.onnx_export import op_histogram
from deploy.passes import run_passes
from deploy.passes.normalization import _matmul_plan


class Graph:
    """A tiny onnx.helper builder: constants become initializers, each op a fresh output name."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, array, dtype=np.float32) -> str:
        self.n += 1
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), f"c{self.n}"))
        return f"c{self.n}"

    def op(self, op_type, *inputs, **attrs) -> str:
        self.n += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), [f"t{self.n}"], **attrs))
        return f"t{self.n}"

    def model(self, output: str, inputs: dict[str, list], opset: int = 20) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [output], ["y"]))
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], self.inits)
        # onnxruntime 1.31 reads IR version 13 at most; onnx 1.23 writes 14 by default.
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def check(proto, feeds, name, expected_changes, atol=1e-5) -> onnx.ModelProto:
    rewritten, records = run_passes(proto, [name])
    assert records[0].changed == expected_changes, records
    onnx.checker.check_model(rewritten)
    before, after = run(proto, feeds), run(rewritten, feeds)
    assert before.shape == after.shape
    assert float(np.abs(after - before).max()) <= atol * max(float(np.abs(before).max()), 1e-6)
    again, records = run_passes(rewritten, [name])
    assert records[0].changed == 0 and op_histogram(again) == op_histogram(rewritten)
    return rewritten


def rand(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------------------ LayerNorm


def layernorm_graph(width, *, square="pow", divide="div", bias=True, axis=-1, per_channel=True, eps=1e-6,
                    opset=18, tokens=5):
    g = Graph()
    axes = g.const([axis], np.int64)
    mean = g.op("ReduceMean", "x", axes, keepdims=1)
    dev = g.op("Sub", "x", mean)
    sq = g.op("Pow", dev, g.const(2.0)) if square == "pow" else g.op("Mul", dev, dev)
    std = g.op("Sqrt", g.op("Add", g.op("ReduceMean", sq, axes, keepdims=1), g.const(eps)))
    normed = g.op("Div", dev, std) if divide == "div" else g.op("Mul", dev, g.op("Reciprocal", std))
    gamma = rand(width, seed=1) if per_channel else rand(tokens, width, seed=1)
    out = g.op("Mul", normed, g.const(gamma))
    if bias:
        out = g.op("Add", out, g.const(rand(width, seed=2)))
    out = g.op("Relu", out)  # a consumer, so the LayerNorm is not the graph output
    return g.model(out, {"x": ["b", tokens, width]}, opset)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), tokens=st.integers(1, 9), width=st.integers(2, 24),
       square=st.sampled_from(["pow", "mul"]), divide=st.sampled_from(["div", "reciprocal"]),
       bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-6]))
def test_layernorm_fuse(batch, tokens, width, square, divide, bias, eps):
    proto = layernorm_graph(width, square=square, divide=divide, bias=bias, eps=eps, tokens=tokens)
    fused = check(proto, {"x": rand(batch, tokens, width, seed=3) * 3 + 1}, "layernorm-fuse", 1)
    ops = op_histogram(fused)
    assert ops["LayerNormalization"] == 1 and "ReduceMean" not in ops and "Sqrt" not in ops
    node = next(n for n in fused.graph.node if n.op_type == "LayerNormalization")
    assert len(node.input) == (3 if bias else 2)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["stash_type"] == 1 and math.isclose(attrs["epsilon"], eps, rel_tol=1e-6)  # fp32 statistics


@pytest.mark.parametrize("variant", ["axis-1", "per-token-scale", "opset-16"])
def test_layernorm_fuse_leaves_look_alikes_alone(variant):
    proto = layernorm_graph(8, axis=1 if variant == "axis-1" else -1, per_channel=variant != "per-token-scale",
                            opset=16 if variant == "opset-16" else 18)
    if variant == "opset-16":  # ReduceMean takes axes as an attribute before opset 18
        for node in proto.graph.node:
            if node.op_type == "ReduceMean":
                node.attribute.append(helper.make_attribute("axes", [-1]))
                del node.input[1:]
    rewritten, records = run_passes(proto, ["layernorm-fuse"])
    assert records[0].changed == 0 and op_histogram(rewritten) == op_histogram(proto)


# ----------------------------------------------------------------------------------------------- GELU


def gelu_graph(association, scaled_by, swap, *, half=0.5, opset=20):
    g = Graph()
    root = g.const(math.sqrt(2.0) if scaled_by == "div" else 1 / math.sqrt(2.0))
    inner = g.op("Div", "x", root) if scaled_by == "div" else g.op("Mul", *(("x", root)[::-1] if swap else ("x", root)))
    plus = g.op("Add", *((g.const(1.0), g.op("Erf", inner)) if swap else (g.op("Erf", inner), g.const(1.0))))
    h = g.const(half)
    if association == "half_x":
        out = g.op("Mul", g.op("Mul", *((h, "x") if swap else ("x", h))), plus)
    elif association == "half_erf":
        out = g.op("Mul", "x", g.op("Mul", *((h, plus) if swap else (plus, h))))
    else:
        out = g.op("Mul", g.op("Mul", *((plus, "x") if swap else ("x", plus))), h)
    return g.model(out, {"x": ["b", 7]}, opset)


@settings(max_examples=20, deadline=None)
@given(association=st.sampled_from(["half_x", "half_erf", "x_then_half"]), scaled_by=st.sampled_from(["div", "mul"]),
       swap=st.booleans(), batch=st.integers(1, 4))
def test_erf_gelu_fuse(association, scaled_by, swap, batch):
    proto = gelu_graph(association, scaled_by, swap)
    fused = check(proto, {"x": rand(batch, 7) * 3}, "gelu-fuse", 1)
    assert op_histogram(fused) == {"Gelu": 1, "Identity": 1}


def test_tanh_gelu_fuse():
    g = Graph()
    cube = g.op("Pow", "x", g.const(3.0))
    inner = g.op("Mul", g.const(math.sqrt(2 / math.pi)), g.op("Add", "x", g.op("Mul", g.const(0.044715), cube)))
    out = g.op("Mul", "x", g.op("Mul", g.const(0.5), g.op("Add", g.op("Tanh", inner), g.const(1.0))))
    fused = check(g.model(out, {"x": ["b", 6]}), {"x": rand(3, 6) * 3}, "gelu-fuse", 1)
    node = next(n for n in fused.graph.node if n.op_type == "Gelu")
    assert helper.get_attribute_value(node.attribute[0]) == b"tanh"


@pytest.mark.parametrize("variant", ["quick-gelu", "wrong-half", "opset-18"])
def test_gelu_fuse_leaves_look_alikes_alone(variant):
    if variant == "quick-gelu":  # CvT's x * sigmoid(1.702 x): a different function
        g = Graph()
        proto = g.model(g.op("Mul", "x", g.op("Sigmoid", g.op("Mul", "x", g.const(1.702)))), {"x": ["b", 7]})
    else:
        proto = gelu_graph("half_x", "div", False, half=0.6 if variant == "wrong-half" else 0.5,
                           opset=18 if variant == "opset-18" else 20)
    rewritten, records = run_passes(proto, ["gelu-fuse"])
    assert records[0].changed == 0 and op_histogram(rewritten) == op_histogram(proto)


# --------------------------------------------------------------------------------------------- Einsum

EQUATIONS = {  # equation -> shapes of (a, b) from sizes b, i, j, k (h = 2 heads)
    "bij,bjk->bik": lambda B, i, j, k: ((B, i, j), (B, j, k)),
    "bhid,bhjd->bhij": lambda B, i, j, k: ((B, 2, i, k), (B, 2, j, k)),
    "bhij,bhjd->bhid": lambda B, i, j, k: ((B, 2, i, j), (B, 2, j, k)),
    "bnc,cd->bnd": lambda B, i, j, k: ((B, i, j), (j, k)),
    "...ij,...jk->...ik": lambda B, i, j, k: ((B, 2, i, j), (B, 2, j, k)),
    "bij,bkj->bik": lambda B, i, j, k: ((B, i, j), (B, k, j)),
    "bik,bkj->bji": lambda B, i, j, k: ((B, i, k), (B, k, j)),
    "ij,jk->ki": lambda B, i, j, k: ((i, j), (j, k)),
    "jk,bkn->bjn": lambda B, i, j, k: ((j, k), (B, k, i)),
}


@settings(max_examples=30, deadline=None)
@given(equation=st.sampled_from(list(EQUATIONS)), batch=st.integers(1, 3), i=st.integers(1, 6),
       j=st.integers(1, 6), k=st.integers(1, 6))
def test_einsum_to_matmul(equation, batch, i, j, k):
    a_shape, b_shape = EQUATIONS[equation](batch, i, j, k)
    g = Graph()
    proto = g.model(g.op("Einsum", "a", "b", equation=equation), {"a": list(a_shape), "b": list(b_shape)})
    rewritten = check(proto, {"a": rand(*a_shape), "b": rand(*b_shape, seed=1)}, "einsum-to-matmul", 1)
    ops = op_histogram(rewritten)
    assert "Einsum" not in ops and ops["MatMul"] == 1


@pytest.mark.parametrize("equation", ["bij,bij->bij", "bij,bjk->b", "ii,ij->ij", "i,j->ij", "bij,bjk,bkl->bil",
                                      "b...j,bjk->b...k"])
def test_einsum_that_is_not_one_matmul_stays(equation):
    assert _matmul_plan(equation) is None


def test_einsum_pass_leaves_an_elementwise_einsum_alone():
    g = Graph()
    proto = g.model(g.op("Einsum", "a", "b", equation="bij,bij->bij"), {"a": [2, 3, 4], "b": [2, 3, 4]})
    rewritten, records = run_passes(proto, ["einsum-to-matmul"])
    assert records[0].changed == 0 and op_histogram(rewritten) == op_histogram(proto)


# ------------------------------------------------------------------------------------------ BatchNorm


def batchnorm_params(g: Graph, channels: int) -> list[str]:
    rng = np.random.default_rng(5)
    return [g.const(rng.uniform(0.5, 1.5, channels)), g.const(rng.standard_normal(channels)),
            g.const(rng.standard_normal(channels) * 0.1), g.const(rng.uniform(0.5, 2.0, channels))]


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), channels=st.integers(1, 6), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       depthwise=st.booleans(), bias=st.booleans(), size=st.integers(4, 9))
def test_batchnorm_fold_into_conv(batch, channels, kernel, stride, depthwise, bias, size):
    g = Graph()
    group = channels if depthwise else 1
    weight = g.const(rand(channels, channels // group, kernel, kernel, seed=4))
    conv_inputs = ["x", weight] + ([g.const(rand(channels, seed=6))] if bias else [])
    conv = g.op("Conv", *conv_inputs, kernel_shape=[kernel, kernel], strides=[stride, stride], group=group,
                pads=[kernel // 2] * 4)
    proto = g.model(g.op("BatchNormalization", conv, *batchnorm_params(g, channels), epsilon=1e-5),
                    {"x": ["b", channels, size, size]})
    folded = check(proto, {"x": rand(batch, channels, size, size, seed=7)}, "batchnorm-fold", 1)
    assert "BatchNormalization" not in op_histogram(folded)


def test_batchnorm_fold_into_gemm():
    g = Graph()
    gemm = g.op("Gemm", "x", g.const(rand(5, 4)), g.const(rand(5, seed=1)), transB=1)
    proto = g.model(g.op("BatchNormalization", gemm, *batchnorm_params(g, 5)), {"x": ["b", 4]})
    assert "BatchNormalization" not in op_histogram(check(proto, {"x": rand(3, 4, seed=2)}, "batchnorm-fold", 1))


@pytest.mark.parametrize("variant", ["statistics-are-inputs", "conv-output-used-twice"])
def test_batchnorm_fold_leaves_unfoldable_alone(variant):
    g = Graph()
    conv = g.op("Conv", "x", g.const(rand(3, 3, 1, 1)), kernel_shape=[1, 1])
    params = batchnorm_params(g, 3)
    inputs = {"x": ["b", 3, 4, 4]}
    if variant == "statistics-are-inputs":
        params[2] = "running_mean"
        inputs["running_mean"] = [3]
    out = g.op("BatchNormalization", conv, *params)
    if variant == "conv-output-used-twice":
        out = g.op("Add", out, conv)
    proto = g.model(out, inputs)
    rewritten, records = run_passes(proto, ["batchnorm-fold"])
    assert records[0].changed == 0 and op_histogram(rewritten) == op_histogram(proto)
