"""Attention passes: each fires on the forms it names, leaves other graphs alone, keeps outputs and is idempotent.

Hand-built graphs reproduce what the dynamo exporter writes for `F.scaled_dot_product_attention`
(packed qkv Linear with a 5-D reshape, or CvT's separate projections; K transposed through a 3-D
Reshape/Transpose/Reshape or a 4-D Transpose; the scale as sqrt(s) on Q and K, on Q alone, or after
the first MatMul), with hypothesis over batch, tokens, heads and head size. A tiny HVT and a tiny CvT
exported by the real exporter check the passes on what the zoo produces.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploy.export.onnx_export import clean_up, export_onnx, op_histogram, opset_of
from deploy.passes import run_passes

ATOL = 1e-5  # of the output scale, fp32


def run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def assert_same(before: np.ndarray, after: np.ndarray) -> None:
    scale = max(float(np.abs(before).max()), 1e-6)
    assert float(np.abs(after - before).max()) <= ATOL * scale


def attention_graph(tokens: int, kv_tokens: int, heads: int, head_dim: int, *, packed: bool, bias: bool,
                    key_form: str = "3d", scaling: str = "sqrt_both", mask: bool = False, seed: int = 0,
                    softmax_axis: int = -1) -> onnx.ModelProto:
    """One self/cross-attention block `y = proj(attention(q(x), k(kv), v(kv)))` as the exporter writes it."""
    rng = np.random.default_rng(seed)
    width, inner = heads * head_dim, heads * head_dim
    inits, nodes, counter = [], [], iter(range(10_000))

    def const(array, dtype=np.float32) -> str:
        name = f"c{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(op, inputs, **attrs) -> str:
        out = f"t{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(src, cols) -> str:
        out = node("MatMul", [src, const(rng.standard_normal((width, cols)) * 0.3)])
        return node("Add", [out, const(rng.standard_normal(cols) * 0.1)]) if bias else out

    def split_heads(x3, n) -> str:
        if heads == 1 and key_form == "bare":
            return node("Reshape", [x3, const([-1, 1, n, head_dim], np.int64)])
        return node("Transpose", [node("Reshape", [x3, const([-1, n, heads, head_dim], np.int64)])], perm=[0, 2, 1, 3])

    if packed:
        five = node("Reshape", [linear("x", 3 * inner), const([-1, tokens, 3, heads, head_dim], np.int64)])
        stacked = node("Transpose", [five], perm=[2, 0, 3, 1, 4])
        axis0 = const([0], np.int64)
        q, k, v = (node("Squeeze", [node("Slice", [stacked, const([i], np.int64), const([i + 1], np.int64), axis0]),
                                    axis0]) for i in range(3))
    else:
        q = split_heads(linear("x", inner), tokens)
        k, v = (split_heads(linear("kv", inner), kv_tokens) for _ in range(2))

    scale = 1.0 / math.sqrt(head_dim)
    if key_form == "3d":
        flat = node("Reshape", [k, const([-1, kv_tokens, head_dim], np.int64)])
        key_t = node("Reshape", [node("Transpose", [flat], perm=[0, 2, 1]),
                                 const([-1, heads, head_dim, kv_tokens], np.int64)])
    else:
        key_t = node("Transpose", [k], perm=[0, 1, 3, 2])
    if scaling == "sqrt_both":
        q = node("Mul", [q, const([math.sqrt(scale)])])
        key_t = node("Mul", [key_t, const([math.sqrt(scale)])])
    elif scaling == "q_only":
        q = node("Mul", [q, const(scale)])
    scores = node("MatMul", [q, key_t])
    if scaling == "post_mul":
        scores = node("Mul", [scores, const(scale)])
    elif scaling == "post_div":
        scores = node("Div", [scores, const(1.0 / scale)])
    if mask:
        scores = node("Add", [scores, const(rng.standard_normal((1, 1, tokens, kv_tokens)))])
    attended = node("MatMul", [node("Softmax", [scores], axis=softmax_axis), v])
    merged = node("Reshape", [node("Transpose", [attended], perm=[0, 2, 1, 3]), const([-1, tokens, inner], np.int64)])
    nodes.append(helper.make_node("MatMul", [merged, const(rng.standard_normal((inner, width)) * 0.3)], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", tokens, width])]
    if not packed:
        inputs.append(helper.make_tensor_value_info("kv", TensorProto.FLOAT, ["b", kv_tokens, width]))
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", tokens, width])], inits)
    # onnxruntime 1.31 reads IR version 13 at most; onnx 1.23 writes 14 by default.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def feeds_for(proto: onnx.ModelProto, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in proto.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


cases = st.fixed_dictionaries({
    "batch": st.integers(1, 3),
    "tokens": st.integers(1, 10),
    "kv_tokens": st.integers(1, 10),
    "heads": st.integers(1, 4),
    "head_dim": st.integers(1, 8),
    "packed": st.booleans(),
    "bias": st.booleans(),
    "key_form": st.sampled_from(["3d", "4d", "bare"]),
    "scaling": st.sampled_from(["sqrt_both", "q_only", "post_mul", "post_div", "none"]),
})


def build(case) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    kv_tokens = case["tokens"] if case["packed"] else case["kv_tokens"]
    key_form = "4d" if case["key_form"] == "bare" and case["heads"] != 1 else case["key_form"]
    proto = attention_graph(case["tokens"], kv_tokens, case["heads"], case["head_dim"], packed=case["packed"],
                            bias=case["bias"], key_form=key_form, scaling=case["scaling"])
    return proto, feeds_for(proto, case["batch"])


def has_q_scale(case) -> bool:
    """Whether canonical attention has a Mul on Q: a scale other than 1, or an untouched Mul by 1."""
    if case["scaling"] == "q_only" and case["key_form"] != "3d":
        return True  # already canonical: the pass leaves it, Mul by 1 included
    return case["scaling"] != "none" and case["head_dim"] != 1


def check(proto, feeds, names, expect_changes) -> onnx.ModelProto:
    """Run `names`; the change counts, outputs and a second run (idempotence) are as expected."""
    rewritten, records = run_passes(proto, names)
    assert [r.changed for r in records] == expect_changes, records
    onnx.checker.check_model(rewritten)
    assert_same(run(proto, feeds), run(rewritten, feeds))
    again, records = run_passes(rewritten, names[-1:])
    assert records[0].changed == 0
    assert op_histogram(again) == op_histogram(rewritten)
    return rewritten


def softmax_inputs(proto: onnx.ModelProto) -> list[str]:
    """Op types of the first MatMul's inputs, for each Softmax."""
    producers = {out: n for n in proto.graph.node for out in n.output}
    found = []
    for n in proto.graph.node:
        if n.op_type == "Softmax":
            matmul = producers[n.input[0]]
            assert matmul.op_type == "MatMul"
            found.append([producers[i].op_type if i in producers else "initializer/input" for i in matmul.input])
    return found


@settings(max_examples=30, deadline=None)
@given(case=cases)
def test_canonical_attention(case):
    proto, feeds = build(case)
    canonical_already = case["scaling"] in ("q_only", "none") and case["key_form"] != "3d"
    rewritten = check(proto, feeds, ["attention-canonical"], [0 if canonical_already else 1])
    (q_side, k_side), = softmax_inputs(rewritten)
    assert k_side == "Transpose"  # one 4-D transpose, no 3-D reshapes
    assert (q_side == "Mul") == has_q_scale(case)
    ops = op_histogram(rewritten)
    assert ops.get("Mul", 0) == has_q_scale(case) and "Div" not in ops


@settings(max_examples=25, deadline=None)
@given(case=cases)
def test_split_qkv_then_fold_scale(case):
    proto, feeds = build(case)
    canonical = run_passes(proto, ["attention-canonical"])[0]
    split = check(canonical, feeds, ["attention-split-qkv"], [int(case["packed"])])
    assert "Slice" not in op_histogram(split) and "Squeeze" not in op_histogram(split)
    folded = check(split, feeds, ["attention-fold-scale"], [int(has_q_scale(case))])
    assert "Mul" not in op_histogram(folded)  # the scale lives in the Q weights now
    assert op_histogram(folded)["MatMul"] == 6  # q, k, v, QK^T, PV, out


@settings(max_examples=25, deadline=None)
@given(case=cases)
def test_onnx_attention_and_defuse(case):
    proto, feeds = build(case)
    fused = check(proto, feeds, ["attention-onnx"], [1])
    assert op_histogram(fused)["Attention"] == 1 and "Softmax" not in op_histogram(fused)
    assert opset_of(fused) == 23  # raised: Attention exists from opset 23
    defused = check(fused, feeds, ["attention-defuse"], [1])
    assert "Attention" not in op_histogram(defused) and op_histogram(defused)["Softmax"] == 1


@settings(max_examples=25, deadline=None)
@given(case=cases)
def test_onnxruntime_contrib_attention_and_defuse(case):
    proto, feeds = build(case)
    canonical = run_passes(proto, ["attention-canonical"])[0]
    if case["packed"]:
        fused = check(canonical, feeds, ["attention-ort-packed"], [1])
        assert op_histogram(fused)["com.microsoft::Attention"] == 1
    else:
        assert run_passes(canonical, ["attention-ort-packed"])[1][0].changed == 0
        fused = check(canonical, feeds, ["attention-ort-mha"], [1])
        assert op_histogram(fused)["com.microsoft::MultiHeadAttention"] == 1
    assert "Softmax" not in op_histogram(fused)
    defused = check(fused, feeds, ["attention-defuse"], [1])
    assert not any(op.startswith("com.microsoft") for op in op_histogram(defused))


def test_multi_head_attention_after_splitting_a_packed_projection():
    proto = attention_graph(6, 6, 3, 4, packed=True, bias=True)
    feeds = feeds_for(proto, 2)
    fused = check(proto, feeds, ["attention-canonical", "attention-split-qkv", "attention-ort-mha"], [1, 1, 1])
    assert op_histogram(fused)["com.microsoft::MultiHeadAttention"] == 1


@pytest.mark.parametrize("name", ["attention-canonical", "attention-onnx", "attention-split-qkv",
                                  "attention-fold-scale", "attention-ort-mha", "attention-ort-packed",
                                  "attention-defuse"])
@pytest.mark.parametrize("variant", ["masked", "softmax-on-axis-2", "no-attention"])
def test_attention_passes_leave_other_graphs_alone(name, variant):
    if variant == "no-attention":  # a Linear, Softmax classifier, MatMul with a constant: no transposed K
        nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
                 helper.make_node("MatMul", ["p", "v"], ["y"])]
        inits = [numpy_helper.from_array(np.ones((4, 5), np.float32), "w"),
                 numpy_helper.from_array(np.ones((5, 3), np.float32), "v")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    else:
        proto = attention_graph(5, 5, 2, 4, packed=False, bias=True, scaling="q_only", key_form="3d",
                                mask=variant == "masked", softmax_axis=2 if variant == "softmax-on-axis-2" else -1)
        if name == "attention-fold-scale":
            # Folding Q's scale into its weights is exact whatever follows QK^T (mask, softmax axis).
            check(proto, feeds_for(proto, 2), [name], [1])
            return
    rewritten, records = run_passes(proto, [name])
    assert records[0].changed == 0
    assert op_histogram(rewritten) == op_histogram(proto)


def test_fold_scale_leaves_non_constant_weights_alone():
    proto = attention_graph(4, 4, 2, 4, packed=False, bias=False, scaling="q_only", key_form="4d")
    # Make the Q projection's weight a graph input: nothing to fold into.
    first_matmul = next(n for n in proto.graph.node if n.op_type == "MatMul")
    weight = next(i for i in proto.graph.initializer if i.name == first_matmul.input[1])
    proto.graph.initializer.remove(weight)
    proto.graph.input.append(helper.make_tensor_value_info(weight.name, TensorProto.FLOAT, list(weight.dims)))
    _, records = run_passes(proto, ["attention-fold-scale"])
    assert records[0].changed == 0


# ------------------------------------------------------------------------------ what the exporter writes


def _randomise_biases(model: torch.nn.Module) -> torch.nn.Module:
    # Zero biases are dropped by onnxslim; trained checkpoints have them, so the passes must see them.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def exported_zoo_like():
    from models.cvt import CvT
    from models.fuse import fuse_batchnorm
    from models.hvt import HVT

    torch.manual_seed(0)
    hvt = _randomise_biases(HVT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pool_block_width=1,
                                num_classes=10))
    cvt = _randomise_biases(CvT(img_size=32, num_classes=10, embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2),
                                patch_sizes=(7, 3), patch_strides=(4, 2), patch_paddings=(2, 1)))
    cvt = fuse_batchnorm(cvt).eval()
    return {name: (model, clean_up(export_onnx(model, (3, 32, 32), opset=20))) for name, model in
            (("hvt", hvt), ("cvt", cvt))}


ZOO_LISTS = {
    "canonical": ["attention-canonical"],
    "fold": ["attention-canonical", "attention-split-qkv", "attention-fold-scale"],
    "onnx": ["attention-onnx"],
    "onnx-defused": ["attention-onnx", "attention-defuse"],
    "ort-mha": ["attention-canonical", "attention-split-qkv", "attention-ort-mha"],
    "ort-packed": ["attention-canonical", "attention-ort-packed"],
}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hvt", "cvt"])
@pytest.mark.parametrize("label", list(ZOO_LISTS))
def test_attention_passes_on_exported_models(exported_zoo_like, family, label):
    model, proto = exported_zoo_like[family]
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    rewritten, records = run_passes(proto, ZOO_LISTS[label])
    blocks = 2
    changed = {r.name: r.changed for r in records}
    expected_fires = {"attention-split-qkv": blocks if family == "hvt" else 0,
                      "attention-ort-packed": blocks if family == "hvt" else 0}
    for name, count in changed.items():
        assert count == expected_fires.get(name, blocks), changed
    scale = float(np.abs(reference).max())
    assert float(np.abs(run(rewritten, {"input": x}) - reference).max()) <= 1e-5 * scale
