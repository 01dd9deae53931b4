"""Attention: one canonical decomposed form, then per target a fused op or the primitives.

Every zoo model's attention is `F.scaled_dot_product_attention`. The dynamo exporter (opset < 23)
writes it as `Mul(Q, sqrt(s))`, K transposed through a 3-D `Reshape/Transpose/Reshape` with shape
arithmetic, `Mul(K^T, sqrt(s))`, `MatMul`, `Softmax`, `MatMul`. The recogniser is onnxscript's
`onnxscript.rewriter.ort_fusions.sdpa.SDPA` rule (every Q/K/QK scaling by Mul or Div, the 4-D, 3-D and
BSHd key transpositions, optional mask); the rules below subclass it and only decide what to emit:

- `attention-canonical`: `MatMul(Softmax(MatMul(Mul(Q, s), Transpose(K))), V)` — one scale on Q,
  *before* the first MatMul (the form TensorRT's MHA fusion wants), one 4-D transpose for K.
- `attention-fold-scale`: the Q scale folded into the Q projection's weights and bias where those are
  constants (CvT's proj_q; DeiT/HVT/ResNAS after `attention-split-qkv`).
- `attention-split-qkv`: a packed qkv Linear (`MatMul -> Reshape(.., 3, H, d) -> Transpose -> Slice x3`)
  as three Linears, for fusions that need separate Q/K/V.
- `attention-onnx`: ONNX `Attention` (opset 23; ORT CPU kernel, OpenVINO SDPA, TensorRT IAttention).
- `attention-ort-mha`: `com.microsoft.MultiHeadAttention` over separate (B, S, H*d) projections.
- `attention-ort-packed`: `com.microsoft.Attention`, which takes the packed qkv weight itself.
- `attention-defuse`: any of the fused ops back to the canonical primitives (runtimes without a kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions.sdpa import SDPA

from .base import rule_pass
from .values import const_array, const_ints, const_scalar, float_dtype, only_consumer, unique_name

_TRANSPOSE_KEY = {"BHSd": [0, 1, 3, 2], "BSHd": [0, 2, 3, 1]}
_HEADS_FIRST = [0, 2, 1, 3]  # (B, S, H, d) <-> (B, H, S, d)


# ---------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Linear:
    """`x @ W (+ b)` with constant W (in, out) and b (out): the projection feeding a head reshape."""

    x: ir.Value
    weight: ir.Value
    bias: ir.Value | None
    graph: ir.Graph

    @classmethod
    def producing(cls, value: ir.Value) -> Linear | None:
        """The Linear whose output is `value`, if its intermediate values feed nothing else."""
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        bias = None
        if node.op_type == "Add":
            a, b = node.inputs
            matmul, bias = (a, b) if const_array(b) is not None else (b, a)
            producer = matmul.producer() if matmul is not None else None
            if matmul is None or const_array(bias) is None or producer is None or not only_consumer(matmul, node):
                return None
            node = producer
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            return None
        x, weight = node.inputs
        w = const_array(weight)
        if x is None or weight is None or weight.graph is None or w is None or w.ndim != 2:
            return None
        bias_array = const_array(bias)
        if bias_array is not None and bias_array.shape not in ((w.shape[1],), (1, w.shape[1]), (1, 1, w.shape[1])):
            return None
        return cls(x, weight, bias, weight.graph)

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        w = const_array(self.weight)
        b = const_array(self.bias)
        assert w is not None  # checked when matched
        return w, (b.reshape(-1) if b is not None else None)

    def emit(self, op, weight: np.ndarray, bias: np.ndarray | None, tag: str) -> ir.Value:
        """A new Linear from x with these arrays (new initializers: the old ones may be shared)."""
        graph = self.graph
        w = ir.tensor(np.ascontiguousarray(weight))
        out = op.MatMul(self.x, op.initializer(w, name=unique_name(graph, f"{self.weight.name}.{tag}")))
        if bias is not None:
            base = self.bias.name if self.bias is not None else f"{self.weight.name}.bias"
            b = ir.tensor(np.ascontiguousarray(bias))
            out = op.Add(out, op.initializer(b, name=unique_name(graph, f"{base}.{tag}")))
        return out


# ------------------------------------------------------------------------------------- the recogniser


class _Attention(SDPA):
    """onnxscript's SDPA pattern; `self.scale` is the total softmax scale, whatever form carried it.

    The check is ours: onnxscript's requires the batch dims of Q, K and V to be the *same symbol*, which
    ONNX shape inference does not give after the exporter's `Reshape(-1, ...)`s (each -1 becomes a fresh
    unknown). Here static sizes must agree and unknown ones may differ.
    """

    scale: float = 1.0

    def check(self, context, query, key, value, mask, key_format, **bindings):
        result = pattern.MatchResult()
        if mask is not None:
            return result.fail("masked attention is left alone (mask layouts differ between the fused ops)")
        if "Where" in (node.op_type for node in context.nodes):
            return result.fail("Softmax guarded by IsNaN/Where: the fused ops would change fully-masked rows")
        shapes = [v.shape for v in (query, key, value)]
        if any(shape is None or len(shape) != 4 for shape in shapes):
            return result.fail("Q, K and V are not 4-D")
        q, k, v = shapes
        if key_format == "BSHd":
            k = (k[0], k[2], k[1], k[3])
        if not (_agree(q[1], k[1], v[1]) and _agree(q[3], k[3]) and _agree(k[2], v[2])):
            return result.fail("heads, head size or key length disagree")
        scale = 1.0
        for tag, name in (("query_scaling", "query_scale"), ("key_scaling", "key_scale"),
                          ("qk_scaling", "qk_scale")):
            kind = bindings.get(tag, "None")
            if kind == "None":
                continue
            value = const_scalar(bindings.get(name))
            if value is None or value == 0.0:
                return result.fail(f"{name} is not a constant non-zero scalar")
            scale *= value if kind == "Mul" else 1.0 / value
        self.scale, self.key_format = scale, key_format
        return result


def _agree(*dims) -> bool:
    static = {d for d in dims if isinstance(d, int)}
    return len(static) <= 1


class CanonicalAttention(_Attention):
    """Any recognised attention ==> MatMul(Softmax(MatMul(Q * s, Transpose(K))), V)."""

    def check(self, context, query, key, value, mask, key_format, **bindings):
        result = super().check(context, query, key, value, mask, key_format, **bindings)
        if not result:
            return result
        ops = [node.op_type for node in context.nodes]
        scaled_elsewhere = bindings.get("key_scaling", "None") != "None" or bindings.get("qk_scaling", "None") != "None"
        if "Reshape" not in ops and "Div" not in ops and ops.count("Mul") <= 1 and not scaled_elsewhere:
            return result.fail("already canonical")
        return result

    def rewrite(self, op, query, key, value, **_):
        return _emit_canonical(op, query, key, value, self.scale, self.key_format)


class OnnxAttention(_Attention):
    """Any recognised attention ==> ONNX Attention-23 on 4-D (B, H, S, d) inputs."""

    def rewrite(self, op, query, key, value, **_):
        if self.key_format == "BSHd":
            key = op.Transpose(key, perm=_HEADS_FIRST)
        return op.Attention(query, key, value, scale=self.scale)


# ------------------------------------------------------------------------------------- projections


def _head_shape(shape: list[int] | None, rank: int) -> list[int] | None:
    """A static head-reshape target: positive sizes, except a leading -1 for the batch (no 0 = copy)."""
    if shape is None or len(shape) != rank or shape[0] == 0 or any(d <= 0 for d in shape[1:]):
        return None
    return shape


def _split_heads(op, x, shape, tag: str):
    """(B, S, H*d) -> (B, H, S, d): Reshape + Transpose, or for one head the bare Reshape onnxslim leaves."""
    return pattern.OrValue(
        [op.Transpose(op.Reshape(x, shape, _allow_other_attributes=True), perm=_HEADS_FIRST),
         op.Reshape(x, shape, _allow_other_attributes=True)],
        tag_var=tag, tag_values=["transpose", "reshape"],
    )


def _merge_heads(op, x, shape, layout: str):
    """(B, H, S, d) -> (B, S, H*d), the inverse of `_split_heads` (a pattern's output cannot be a choice,
    so rules that end here come in one variant per layout)."""
    if layout == "reshape":
        return op.Reshape(x, shape, _allow_other_attributes=True)
    return op.Reshape(op.Transpose(x, perm=_HEADS_FIRST), shape, _allow_other_attributes=True)


def _heads_of(shape: ir.Value, layout: str) -> tuple[int, int] | None:
    """(heads, head_dim) of a `_split_heads` match, from its reshape target."""
    dims = _head_shape(const_ints(shape), 4)
    if dims is None:
        return None
    if layout == "transpose":
        return dims[2], dims[3]
    return (1, dims[3]) if dims[1] == 1 else None  # a bare reshape is a head split only for one head


def _emit_split(op, x, heads: int, head_dim: int) -> ir.Value:
    shape = op.Constant(value_ints=[0, 0, heads, head_dim])
    return op.Transpose(op.Reshape(x, shape), perm=_HEADS_FIRST)


def _emit_merge(op, x) -> ir.Value:
    return op.Reshape(op.Transpose(x, perm=_HEADS_FIRST), op.Constant(value_ints=[0, 0, -1]))


class FoldQueryScale(pattern.RewriteRuleClassBase):
    """split_heads(x @ Wq + bq) * s  ==>  split_heads(x @ (s Wq) + s bq), where the product is Q in QK^T."""

    def pattern(self, op, projected, shape, scale, key_t):
        return op.MatMul(op.Mul(_split_heads(op, projected, shape, "layout"), scale), key_t)

    def check(self, context, projected, shape, scale, layout, **_):
        result = pattern.MatchResult()
        if const_scalar(scale) is None:
            return result.fail("scale is not a constant scalar")
        if _heads_of(shape, layout) is None:
            return result.fail("not a (B, S, H, d) head split")
        self.linear = Linear.producing(projected) if only_consumer(projected) else None
        if self.linear is None:
            return result.fail("Q is not the only use of a Linear with constant weights")
        return result

    def rewrite(self, op, projected, shape, scale, key_t, layout, **_):
        s = const_scalar(scale)
        assert self.linear is not None and s is not None  # set and checked by check()
        w, b = self.linear.arrays()
        q = self.linear.emit(op, w * s, None if b is None else b * s, "qscaled")
        heads = op.Reshape(q, shape)
        if layout == "transpose":
            heads = op.Transpose(heads, perm=_HEADS_FIRST)
        return op.MatMul(heads, key_t)


class _PackedQkv(pattern.RewriteRuleClassBase):
    """Matches `x @ Wqkv (+ b) -> Reshape(.., 3, H, d) -> Transpose(2,0,3,1,4) -> Slice[i] -> Squeeze` x3."""

    def _heads(self, op, projected, shape):
        return op.Transpose(op.Reshape(projected, shape, _allow_other_attributes=True, _outputs=["reshaped"]),
                            perm=[2, 0, 3, 1, 4])

    def _pick(self, op, heads, i):
        sliced = op.Slice(heads, pattern.Var(f"start{i}"), pattern.Var(f"end{i}"), [0])
        return op.Squeeze(sliced, [0])

    def _check_packed(self, projected, shape, reshaped, bindings) -> pattern.MatchResult:
        result = pattern.MatchResult()
        dims = _head_shape(const_ints(shape), 5)
        if dims is None or dims[2] != 3:
            return result.fail("not a (B, S, 3, H, d) packed reshape")
        if 0 in dims[:2] and reshaped.producer().attributes.get_int("allowzero", 0):
            return result.fail("allowzero reshape with a literal 0")
        for i in range(3):
            if const_ints(bindings[f"start{i}"]) != [i] or const_ints(bindings[f"end{i}"]) != [i + 1]:
                return result.fail("slices are not q, k, v in order")
        linear = Linear.producing(projected)
        if linear is None or not only_consumer(projected):
            return result.fail("qkv is not the only use of a Linear with constant weights")
        if linear.arrays()[0].shape[1] != 3 * dims[3] * dims[4]:
            return result.fail("packed width is not 3 * heads * head_dim")
        self.dims, self.linear = dims, linear
        return result


class SplitPackedQkv(_PackedQkv):
    """Packed qkv Linear ==> three Linears, each Reshape(B, S, H, d) -> Transpose(0, 2, 1, 3)."""

    def pattern(self, op, projected, shape):
        heads = self._heads(op, projected, shape)
        return tuple(self._pick(op, heads, i) for i in range(3))

    def check(self, context, projected, shape, reshaped, **bindings):
        return self._check_packed(projected, shape, reshaped, bindings)

    def rewrite(self, op, projected, shape, reshaped, **_):
        w, b = self.linear.arrays()
        inner = self.dims[3] * self.dims[4]
        head_shape = op.Constant(value_ints=[self.dims[0], self.dims[1], self.dims[3], self.dims[4]])
        attrs = reshaped.producer().attributes
        outputs = []
        for i, tag in enumerate("qkv"):
            cols = slice(i * inner, (i + 1) * inner)
            part = self.linear.emit(op, w[:, cols], None if b is None else b[cols], tag)
            outputs.append(op.Transpose(op.Reshape(part, head_shape, **attrs), perm=_HEADS_FIRST))
        return tuple(outputs)


# ------------------------------------------------------------------------ onnxruntime contrib fusions


def _canonical_core(op, query, key, value, scale, /):
    """The canonical attention as a pattern: (optionally) scaled Q, 4-D K transpose, Softmax."""
    query = pattern.OrValue([op.Mul(query, scale), query], tag_var="q_scaled", tag_values=[True, False])
    scores = op.MatMul(query, op.Transpose(key, perm=[0, 1, 3, 2]))
    return op.MatMul(op.Softmax(scores, axis=-1), value)


def _merged_and_scaled(out_shape, out_layout: str, heads: int, head_dim: int, scale,
                       q_scaled: bool) -> tuple[str | None, float | None]:
    """What both ORT fusions require of the tail: heads merged back to (B, S, H*d), a constant query scale.

    Returns (why not, None) or (None, the scale).
    """
    out = const_ints(out_shape)
    if out is None or len(out) != 3 or out[2] not in (-1, heads * head_dim) or 0 in out:
        return "output is not merged back to (B, S, H*d)", None
    if out_layout == "reshape" and heads != 1:
        return "a bare reshape merges heads only for one head", None
    value = const_scalar(scale) if q_scaled else 1.0
    return ("scale is not a constant scalar", None) if value is None else (None, value)


class OrtMultiHeadAttention(pattern.RewriteRuleClassBase):
    """Separate (B, S, H*d) Q/K/V, head splits, canonical attention, merge  ==>  com.microsoft.MultiHeadAttention."""

    def __init__(self, out_layout: str):
        super().__init__(name=f"OrtMultiHeadAttention_{out_layout}")
        self.out_layout = out_layout

    def pattern(self, op, q3, k3, v3, q_shape, k_shape, v_shape, out_shape, scale):
        heads = [_split_heads(op, x, s, f"{name}_layout")
                 for name, x, s in (("q", q3, q_shape), ("k", k3, k_shape), ("v", v3, v_shape))]
        return _merge_heads(op, _canonical_core(op, heads[0], heads[1], heads[2], scale), out_shape, self.out_layout)

    def check(self, context, q3, k3, v3, q_shape, k_shape, v_shape, out_shape, scale, q_scaled,
              q_layout, k_layout, v_layout, **_):
        result = pattern.MatchResult()
        layouts = {_heads_of(s, t) for s, t in ((q_shape, q_layout), (k_shape, k_layout), (v_shape, v_layout))}
        if None in layouts or len(layouts) != 1:
            return result.fail("Q/K/V are not split into one (heads, head_dim) layout")
        ((self.heads, self.head_dim),) = [layout for layout in layouts if layout is not None]
        if any(x.shape is None or len(x.shape) != 3 for x in (q3, k3, v3)):
            return result.fail("Q/K/V are not 3-D")
        reason, self.scale = _merged_and_scaled(out_shape, self.out_layout, self.heads, self.head_dim, scale, q_scaled)
        return result.fail(reason) if reason else result

    def rewrite(self, op, q3, k3, v3, **_):
        return op.MultiHeadAttention(q3, k3, v3, num_heads=self.heads, scale=self.scale, _domain="com.microsoft")


class OrtPackedAttention(_PackedQkv):
    """Packed qkv Linear, canonical attention, merge  ==>  com.microsoft.Attention(x, Wqkv, bqkv)."""

    def __init__(self, out_layout: str):
        super().__init__(name=f"OrtPackedAttention_{out_layout}")
        self.out_layout = out_layout

    def pattern(self, op, projected, shape, out_shape, scale):
        heads = self._heads(op, projected, shape)
        query, key, value = (self._pick(op, heads, i) for i in range(3))
        out = _canonical_core(op, query, key, value, scale)
        return _merge_heads(op, out, out_shape, self.out_layout)

    def check(self, context, projected, shape, reshaped, out_shape, scale, q_scaled, **bindings):
        result = self._check_packed(projected, shape, reshaped, bindings)
        if not result:
            return result
        reason, self.scale = _merged_and_scaled(out_shape, self.out_layout, self.dims[3], self.dims[4], scale, q_scaled)
        return result.fail(reason) if reason else result

    def rewrite(self, op, projected, **_):
        w, b = self.linear.arrays()
        graph = self.linear.graph
        bias = b if b is not None else np.zeros(w.shape[1], dtype=w.dtype)
        bias_value = op.initializer(ir.tensor(np.ascontiguousarray(bias)),
                                    name=unique_name(graph, f"{self.linear.weight.name}.attention_bias"))
        return op.Attention(self.linear.x, self.linear.weight, bias_value, num_heads=self.dims[3],
                            scale=self.scale, _domain="com.microsoft")


# ------------------------------------------------------------------------------------------- de-fuse


def _emit_canonical(op, query, key, value, scale: float, key_format: str = "BHSd"):
    if scale != 1.0:
        query = op.Mul(query, op.Constant(value=ir.tensor(np.array(scale, dtype=float_dtype(query)))))
    scores = op.MatMul(query, op.Transpose(key, perm=_TRANSPOSE_KEY[key_format]))
    return op.MatMul(op.Softmax(scores, axis=-1), value)


class DefuseOnnxAttention(pattern.RewriteRuleClassBase):
    """ONNX Attention on 4-D inputs, no mask or cache  ==>  canonical primitives."""

    def pattern(self, op, query, key, value):
        return op.Attention(query, key, value, _allow_other_attributes=True, _outputs=["attended"])

    def check(self, context, query, key, value, attended, **_):
        result = pattern.MatchResult()
        node = attended.producer()
        attrs = node.attributes
        if len(node.outputs) != 1:
            return result.fail("Attention exposes its cache or QK outputs")
        if any((attrs.get_int("is_causal", 0), attrs.get_float("softcap", 0.0),
                attrs.get_int("qk_matmul_output_mode", 0))):
            return result.fail("causal, soft-capped or QK-output attention is left fused")
        if any(v.shape is None or len(v.shape) != 4 for v in (query, key, value)):
            return result.fail("only 4-D (B, H, S, d) inputs are de-fused")
        if not _agree(query.shape[1], key.shape[1], value.shape[1]):
            return result.fail("grouped-query attention (fewer K/V heads) is left fused")
        scale = attrs.get_float("scale", None) if "scale" in attrs else None
        if scale is None and not isinstance(query.shape[-1], int):
            return result.fail("default scale needs a static head size")
        self.scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
        return result

    def rewrite(self, op, query, key, value, **_):
        return _emit_canonical(op, query, key, value, self.scale)


class DefuseMultiHeadAttention(pattern.RewriteRuleClassBase):
    """com.microsoft.MultiHeadAttention(q, k, v) on (B, S, H*d)  ==>  head reshapes + canonical primitives."""

    def pattern(self, op, q3, k3, v3):
        return op.MultiHeadAttention(q3, k3, v3, _allow_other_attributes=True, _domain="com.microsoft",
                                     _outputs=["attended"])

    def check(self, context, q3, k3, v3, attended, **_):
        result = pattern.MatchResult()
        node = attended.producer()
        if len(node.outputs) != 1 or node.attributes.get_int("unidirectional", 0):
            return result.fail("MultiHeadAttention with a cache or causal mask is left fused")
        heads = node.attributes.get_int("num_heads", 0)
        width = q3.shape[-1] if q3.shape is not None else None
        if not heads or not isinstance(width, int) or width % heads:
            return result.fail("head size is not static")
        self.heads, self.head_dim = heads, width // heads
        scale = node.attributes.get_float("scale", 0.0)
        self.scale = scale or 1.0 / math.sqrt(self.head_dim)
        return result

    def rewrite(self, op, q3, k3, v3, **_):
        q, k, v = (_emit_split(op, x, self.heads, self.head_dim) for x in (q3, k3, v3))
        return _emit_merge(op, _emit_canonical(op, q, k, v, self.scale))


class DefuseOrtAttention(pattern.RewriteRuleClassBase):
    """com.microsoft.Attention(x, Wqkv, bqkv) with equal q/k/v widths  ==>  one Linear, Split, canonical."""

    def pattern(self, op, x, weight, bias):
        return op.Attention(x, weight, bias, _domain="com.microsoft", _allow_other_attributes=True,
                            _outputs=["attended"])

    def check(self, context, x, weight, bias, attended, **_):
        result = pattern.MatchResult()
        node = attended.producer()
        attrs = node.attributes
        if len(node.outputs) != 1 or attrs.get_int("unidirectional", 0) or "qkv_hidden_sizes" in attrs:
            return result.fail("causal, cached or unequal-width Attention is left fused")
        w = const_array(weight)
        heads = attrs.get_int("num_heads", 0)
        if w is None or w.ndim != 2 or not heads or w.shape[1] % (3 * heads):
            return result.fail("weights are not a constant (in, 3 * heads * head_dim) matrix")
        self.heads, self.head_dim = heads, w.shape[1] // (3 * heads)
        self.scale = attrs.get_float("scale", 0.0) or 1.0 / math.sqrt(self.head_dim)
        return result

    def rewrite(self, op, x, weight, bias, **_):
        width = self.heads * self.head_dim
        qkv = op.Add(op.MatMul(x, weight), bias)
        parts = op.Split(qkv, op.Constant(value_ints=[width] * 3), axis=-1, _outputs=3)
        q, k, v = (_emit_split(op, part, self.heads, self.head_dim) for part in parts)
        return _emit_merge(op, _emit_canonical(op, q, k, v, self.scale))


class DefuseFusionSdpa(pattern.RewriteRuleClassBase):
    """onnxscript's intermediate ai.onnxruntime._fusion::SDPA (left by a partial ORT fusion) ==> primitives."""

    def pattern(self, op, query, key, value):
        return op.SDPA(query, key, value, _allow_other_attributes=True, _domain="ai.onnxruntime._fusion",
                       _outputs=["attended"])

    def check(self, context, query, key, value, attended, **_):
        result = pattern.MatchResult()
        attrs = attended.producer().attributes
        scale = attrs.get_float("scale", None) if "scale" in attrs else None
        if scale is None and (query.shape is None or not isinstance(query.shape[-1], int)):
            return result.fail("default scale needs a static head size")
        self.scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
        self.key_format = attrs.get_string("key_format", "BHSd")
        return result

    def rewrite(self, op, query, key, value, **_):
        if self.key_format == "BSHd":
            key = op.Transpose(key, perm=_HEADS_FIRST)
        return _emit_canonical(op, query, key, value, self.scale)


# ---------------------------------------------------------------------------------------------- passes

ATTENTION_CANONICAL = rule_pass(
    "attention-canonical",
    "attention in one pre-scaled form: Softmax(MatMul(Q*s, Transpose(K))) @ V; the exporter's 3-D K "
    "transpose and shape arithmetic go, the two sqrt(s) Muls become one on Q (TensorRT's MHA fusion wants "
    "the scale before the first MatMul)",
    [CanonicalAttention.rule()],
    category="attention",
)

ATTENTION_SPLIT_QKV = rule_pass(
    "attention-split-qkv",
    "packed qkv Linear (DeiT/HVT/ResNAS) as three Linears with their own head reshapes: drops the 5-D "
    "transpose and three slices; needed by fusions that take separate Q/K/V",
    [SplitPackedQkv.rule()],
    category="attention",
)

ATTENTION_FOLD_SCALE = rule_pass(
    "attention-fold-scale",
    "the softmax scale on Q folded into the Q projection's constant weights and bias (CvT's proj_q; packed "
    "models after attention-split-qkv): no Mul left; run after attention-canonical",
    [FoldQueryScale.rule()],
    category="attention",
)

ATTENTION_ONNX = rule_pass(
    "attention-onnx",
    "attention as one ONNX Attention op (opset 23; raises the graph's opset when it fires): ORT CPU kernel, "
    "OpenVINO SDPA, TensorRT >= 10.14 IAttention",
    [OnnxAttention.rule()],
    min_opset=23,
    raise_opset=True,
    category="attention",
)

ATTENTION_ORT_MHA = rule_pass(
    "attention-ort-mha",
    "com.microsoft.MultiHeadAttention over separate Q/K/V projections (ONNX Runtime only); packed models "
    "need attention-split-qkv first; run after attention-canonical",
    [OrtMultiHeadAttention.rule(layout) for layout in ("transpose", "reshape")],
    category="attention",
)

ATTENTION_ORT_PACKED = rule_pass(
    "attention-ort-packed",
    "com.microsoft.Attention: packed qkv Linear and attention as one op taking the qkv weight (ONNX Runtime "
    "only); run after attention-canonical",
    [OrtPackedAttention.rule(layout) for layout in ("transpose", "reshape")],
    category="attention",
)

ATTENTION_DEFUSE = rule_pass(
    "attention-defuse",
    "ONNX Attention, com.microsoft.MultiHeadAttention/Attention and onnxscript's interim SDPA back to "
    "canonical MatMul/Softmax/MatMul, for runtimes without a kernel (ORT Core ML EP, older parsers)",
    [DefuseOnnxAttention.rule(), DefuseMultiHeadAttention.rule(), DefuseOrtAttention.rule(), DefuseFusionSdpa.rule()],
    category="attention",
)
