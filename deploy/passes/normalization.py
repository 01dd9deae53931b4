"""Normalisation and activation ops as the single ONNX ops runtimes have kernels for.

Our exporter already writes `LayerNormalization` and `Gelu` at opset >= 20; these passes are for
graphs that hold the decomposed forms (older exporters, opset < 17/20, foreign ONNX files):

- `layernorm-fuse`: ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add ==> LayerNormalization-17 with
  fp32 statistics (`stash_type=1`). Fused, the statistics stay in fp32 under an fp16 conversion: the
  decomposed chain is what overflows in fp16 ViTs (NVIDIA/TensorRT issues 2781, 3692).
- `gelu-fuse`: erf GELU (any association of 0.5 * x * (1 + erf(x / sqrt 2))) and the tanh
  approximation ==> Gelu-20. CvT's QuickGELU (`x * sigmoid(1.702 x)`) is a different function: kept.
- `einsum-to-matmul`: two-operand Einsum that is a (batched) matrix product ==> Transpose + MatMul
  (TensorRT < 8.2 and several converters lack Einsum).

Recognisers come from onnxscript where it has them: `onnxscript.rewriter.rules.fusion._layer_norm`
(LayerNormFusion, LayerNormBiasFusion) and `onnxscript.rewriter.ort_fusions.gelu` (GeluTanhFusion,
which emits com.microsoft FastGelu; here it emits ONNX Gelu).
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions.gelu import GeluTanhFusion
from onnxscript.rewriter.rules.fusion._layer_norm import LayerNormBiasFusion, LayerNormFusion

from .base import rule_pass
from .values import const_array, const_scalar

# ------------------------------------------------------------------------------------------ LayerNorm


def _per_channel(param: ir.Value | None, x: ir.Value) -> bool:
    """LayerNormalization broadcasts scale/bias over the last axis only: (C,) or (1, .., 1, C)."""
    array = const_array(param)
    if array is None or x.shape is None or not isinstance(x.shape[-1], int):
        return False
    return array.size == x.shape[-1] and (array.ndim == 1 or all(d == 1 for d in array.shape[:-1]))


class LayerNormScaled(LayerNormFusion):
    """onnxscript's LayerNorm recogniser, only where the affine scale is per channel."""

    def check(self, context, x, scale, epsilon, **_):
        result = super().check(context, x, epsilon)
        if result and not _per_channel(scale, x):
            return result.fail("scale is not a per-channel constant")
        return result


class LayerNormScaledShifted(LayerNormScaled):
    """The same with the affine bias Add, so a LayerNorm with bias counts as one place, not two."""

    def pattern(self, op, x, scale, epsilon, bias):
        return op.Add(super().pattern(op, x, scale, epsilon), bias)

    def check(self, context, x, scale, epsilon, bias, **_):
        result = super().check(context, x, scale, epsilon)
        if result and not _per_channel(bias, x):
            return result.fail("bias is not a per-channel constant")
        return result

    def rewrite(self, op, x, scale, epsilon, bias, **_):
        return op.LayerNormalization(x, scale, bias, axis=-1, epsilon=self._epsilon, stash_type=self._stash_type)


class LayerNormShifted(LayerNormBiasFusion):
    """LayerNormalization -> Add(bias) ==> LayerNormalization with bias, for per-channel constant biases."""

    def check(self, context, x, scale, bias, normalized, **_):
        result = pattern.MatchResult()
        node = normalized.producer()
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            return result.fail("already has a bias")
        if node.attributes.get_int("axis", -1) != -1 or not _per_channel(bias, x):
            return result.fail("bias is not a per-channel constant on the last axis")
        return result


# ----------------------------------------------------------------------------------------------- GELU

_SQRT2 = math.sqrt(2.0)


class ErfGelu(pattern.RewriteRuleClassBase):
    """0.5 * x * (1 + erf(x / sqrt 2)), in each association the exporters write, ==> Gelu-20."""

    def __init__(self, association: str, scaled_by: str):
        super().__init__(name=f"ErfGelu_{association}_{scaled_by}")
        self.association, self.scaled_by = association, scaled_by

    def pattern(self, op, x, root, half, one):
        inner = op.Div(x, root) if self.scaled_by == "div" else op.Mul(x, root)
        one_plus_erf = op.Add(op.Erf(inner), one)
        if self.association == "half_x":  # (0.5 * x) * (1 + erf)
            return op.Mul(op.Mul(x, half), one_plus_erf)
        if self.association == "half_erf":  # x * (0.5 * (1 + erf))
            return op.Mul(x, op.Mul(one_plus_erf, half))
        return op.Mul(op.Mul(x, one_plus_erf), half)  # (x * (1 + erf)) * 0.5

    def check(self, context, x, root, half, one, **_):
        result = pattern.MatchResult()
        want_root = _SQRT2 if self.scaled_by == "div" else 1.0 / _SQRT2
        values = [const_scalar(root), const_scalar(half), const_scalar(one)]
        if not all(v is not None and math.isclose(v, w, rel_tol=1e-5)
                   for v, w in zip(values, (want_root, 0.5, 1.0), strict=True)):
            return result.fail("constants are not those of erf GELU")
        return result

    def rewrite(self, op, x, **_):
        return op.Gelu(x, approximate="none")


class TanhGelu(GeluTanhFusion):
    """onnxscript's tanh-GELU recogniser, emitting ONNX Gelu(approximate='tanh') instead of FastGelu."""

    def rewrite(self, op, x):
        return op.Gelu(x, approximate="tanh")


def _gelu_rules() -> list[pattern.RewriteRule]:
    rules = []
    for association in ("half_x", "half_erf", "x_then_half"):
        for scaled_by in ("div", "mul"):
            rules.extend(ErfGelu.rule(association, scaled_by).commute())
    return rules + [TanhGelu.rule()]


# --------------------------------------------------------------------------------------------- Einsum


def _matmul_plan(equation: str) -> dict | None:
    """For a two-operand Einsum that is a batched matrix product, the transposes around one MatMul.

    Letters: batch (in both inputs and the output), i (first input and output), j (second input and
    output), k (both inputs, summed); extra batch letters on one operand only broadcast as MatMul does
    (`bnc,cd->bnd`). A leading `...` on every term is a broadcast prefix, as MatMul has.
    Perms are over the lettered axes; `None` means no transpose is needed.
    """
    equation = equation.replace(" ", "")
    if equation.count("->") != 1:
        return None
    inputs, out = equation.split("->")
    terms = [*inputs.split(","), out]
    if len(terms) != 3:
        return None
    ellipsis = [t.startswith("...") for t in terms]
    if any(ellipsis) and not all(ellipsis):
        return None
    a, b, o = (t[3:] if e else t for t, e in zip(terms, ellipsis, strict=True))
    if any("." in t or len(set(t)) != len(t) for t in (a, b, o)):
        return None  # inner ellipsis, or repeated letters (traces, diagonals)
    k = [c for c in a if c in b and c not in o]
    common = [c for c in o if c in a and c in b]  # batch letters of both, in output order
    a_out = [c for c in a if c in o and c not in b]
    b_out = [c for c in b if c in o and c not in a]
    if len(k) != 1 or not a_out or not b_out or set(a) | set(b) != set(o) | set(k):
        return None
    # The last output letter of each operand is its matrix axis; any others are batch axes of that operand
    # alone, which MatMul broadcasts only if the other operand has none.
    *extra_a, i = a_out
    *extra_b, j = b_out
    if (extra_a and extra_b) or ((extra_a or extra_b) and all(ellipsis)):
        return None
    extra = [c for c in o if c in extra_a or c in extra_b]
    mm_out = [*extra, *common, i, j]

    def perm(term: str, order: list[str]) -> list[int] | None:
        axes = [term.index(c) for c in order]
        return None if axes == list(range(len(term))) else axes

    return {"a": perm(a, [*(extra if extra_a else []), *common, i, *k]),
            "b": perm(b, [*(extra if extra_b else []), *common, *k, j]),
            "out": perm("".join(mm_out), list(o)), "ellipsis": all(ellipsis), "lettered": (len(a), len(b), len(o))}


class EinsumMatMul(pattern.RewriteRuleClassBase):
    """Einsum('bhid,bhjd->bhij'-like) ==> [Transpose] -> MatMul -> [Transpose]."""

    def pattern(self, op, a, b):
        return op.Einsum(a, b, _allow_other_attributes=True, _outputs=["product"])

    def check(self, context, a, b, product, **_):
        result = pattern.MatchResult()
        self.plan = _matmul_plan(product.producer().attributes.get_string("equation", ""))
        if self.plan is None:
            return result.fail("not a batched matrix product")
        self.extra = (0, 0, 0)
        if self.plan["ellipsis"]:
            if any(v.shape is None for v in (a, b, product)):
                return result.fail("'...' needs static ranks")
            self.extra = tuple(len(v.shape) - n for v, n in zip((a, b, product), self.plan["lettered"], strict=True))
        return result

    def rewrite(self, op, a, b, **_):
        plan = self.plan
        assert plan is not None  # set by check()

        def transpose(value, perm, extra):
            if perm is None:
                return value
            return op.Transpose(value, perm=list(range(extra)) + [p + extra for p in perm])

        product = op.MatMul(transpose(a, plan["a"], self.extra[0]), transpose(b, plan["b"], self.extra[1]))
        return transpose(product, plan["out"], self.extra[2])


# ---------------------------------------------------------------------------------------------- passes

LAYERNORM_FUSE = rule_pass(
    "layernorm-fuse",
    "decomposed LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) as one "
    "LayerNormalization-17 with fp32 statistics; keeps fp16 graphs from overflowing in the variance",
    [LayerNormScaledShifted.rule()],
    [LayerNormScaled.rule()],
    [LayerNormShifted.rule()],  # a bias-less LayerNormalization (another exporter's) and its Add
    min_opset=17,
    category="normalization",
)

GELU_FUSE = rule_pass(
    "gelu-fuse",
    "erf GELU (and the tanh approximation) as one Gelu-20 op; QuickGELU (CvT) is a different function and "
    "stays",
    _gelu_rules(),
    min_opset=20,
    category="normalization",
)

EINSUM_TO_MATMUL = rule_pass(
    "einsum-to-matmul",
    "two-operand Einsum that is a batched matrix product as Transpose + MatMul (TensorRT < 8.2 and several "
    "converters lack Einsum)",
    [EinsumMatMul.rule()],
    category="normalization",
)
