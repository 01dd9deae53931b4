"""Token pooling over the sequence axis expressed as 2-D pooling.

HVT max-pools its flattened token sequence with a 1-D `MaxPool` wrapped in two transposes
(`(B, N, C) -> (B, C, N) -> pool -> (B, N, C)`). Some runtimes only run 2-D pooling (ONNX Runtime's
Core ML EP, older converters). Viewing the tokens as a one-channel image `(B, 1, N, C)` and pooling
with a `(k, 1)` window pools the same elements and drops both transposes; a bare 1-D pool over
`(B, C, N)` becomes `(B, C, 1, N)` with a `(1, k)` window. Max and average are exact either way.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from .base import rule_pass

_POOL_OPS = ("MaxPool", "AveragePool")


def _one_d_pool_attributes(node: ir.Node | None) -> dict | None:
    """The pooling node's attributes if it is a plain 1-D pool we can widen, else None."""
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _POOL_OPS or len(node.outputs) != 1:
        return None
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) != 1:
        return None
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None  # SAME_* padding would need recomputing per axis
    if attrs.get("storage_order", 0) != 0:
        return None
    return attrs


def _checked_attributes(pooled: ir.Value) -> dict:
    """The attributes of a pool the rule's check accepted (rewrite runs only after it passed)."""
    attrs = _one_d_pool_attributes(pooled.producer())
    assert attrs is not None
    return attrs


def _widened(attrs: dict, pooled_axis: int) -> dict:
    """Attributes for the same pool on a 2-D window whose other axis has size 1."""

    def place(value: int, neutral: int) -> list[int]:
        return [value, neutral] if pooled_axis == 0 else [neutral, value]

    (kernel,) = attrs["kernel_shape"]
    (stride,) = attrs.get("strides", [1])
    (dilation,) = attrs.get("dilations", [1])
    begin, end = attrs.get("pads", [0, 0])
    out = {
        "kernel_shape": place(kernel, 1),
        "strides": place(stride, 1),
        "dilations": place(dilation, 1),
        "pads": place(begin, 0) + place(end, 0),
    }
    for key in ("ceil_mode", "count_include_pad", "auto_pad"):
        if key in attrs:
            out[key] = attrs[key]
    if "dilations" not in attrs:
        del out["dilations"]  # AveragePool only accepts dilations from opset 19
    return out


class TokenPoolTo2d(pattern.RewriteRuleClassBase):
    """Transpose(0,2,1) -> Pool1d -> Transpose(0,2,1)  ==>  Unsqueeze(1) -> Pool2d (k,1) -> Squeeze(1)."""

    def __init__(self, op_type: str):
        super().__init__(name=f"Token{op_type}1dTo2d")
        self.op_type = op_type

    def pattern(self, op, x):
        channels_first = op.Transpose(x, perm=[0, 2, 1])
        pooled = getattr(op, self.op_type)(channels_first, _allow_other_attributes=True, _outputs=["pooled"])
        return op.Transpose(pooled, perm=[0, 2, 1])

    def check(self, context, x, pooled, **_) -> bool:
        return _one_d_pool_attributes(pooled.producer()) is not None

    def rewrite(self, op, x, pooled, **_):
        attrs = _widened(_checked_attributes(pooled), pooled_axis=0)
        axes = op.Constant(value_ints=[1])
        image = op.Unsqueeze(x, axes)
        return op.Squeeze(getattr(op, self.op_type)(image, **attrs), axes)


class Pool1dTo2d(pattern.RewriteRuleClassBase):
    """Pool1d over (B, C, N)  ==>  Unsqueeze(2) -> Pool2d (1,k) -> Squeeze(2)."""

    def __init__(self, op_type: str):
        super().__init__(name=f"{op_type}1dTo2d")
        self.op_type = op_type

    def pattern(self, op, x):
        return getattr(op, self.op_type)(x, _allow_other_attributes=True, _outputs=["pooled"])

    def check(self, context, x, pooled, **_) -> bool:
        return _one_d_pool_attributes(pooled.producer()) is not None

    def rewrite(self, op, x, pooled, **_):
        attrs = _widened(_checked_attributes(pooled), pooled_axis=1)
        axes = op.Constant(value_ints=[2])
        return op.Squeeze(getattr(op, self.op_type)(op.Unsqueeze(x, axes), **attrs), axes)


POOL_1D_TO_2D = rule_pass(
    "pool1d-to-2d",
    "1-D MaxPool/AveragePool over tokens as 2-D pooling; drops the transposes around token pooling "
    "(HVT). Needed by runtimes that only pool in 2-D (ORT Core ML EP); exact.",
    [TokenPoolTo2d.rule(op) for op in _POOL_OPS],
    [Pool1dTo2d.rule(op) for op in _POOL_OPS],
    category="pooling",
)
