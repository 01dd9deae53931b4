"""Convolutional parts: BatchNorm folded into the convolution (or Gemm) before it.

The export stage already folds BatchNorm in PyTorch (models/fuse.py: CvT's depthwise q/k/v projections,
the ViT-ResNAS stem), so our own graphs have none left; this pass is for foreign ONNX files and for
exporters that keep the BatchNormalization node. The rules are onnxscript's
(`onnxscript.rewriter.rules.common._fuse_batchnorm`: W' = W * gamma / sqrt(var + eps),
b' = (b - mean) * gamma / sqrt(var + eps) + beta), which refuse shared or non-constant parameters;
the wrapper below also refuses training-mode BatchNorm, whose running statistics are outputs.

ViT-ResNAS's residual 2x2 AveragePool and CvT's strided depthwise k/v convolutions are left as they are:
both are already the single 2-D op every runtime here has a kernel for.
"""

from __future__ import annotations

from onnxscript.rewriter.rules.common._fuse_batchnorm import (
    FuseBatchNormIntoConv,
    FuseBatchNormIntoConvTranspose,
    FuseBatchNormIntoGemm,
    _FuseBatchNormBase,
)

from .base import rule_pass


def _inference_only(rule_class: type[_FuseBatchNormBase]) -> type[_FuseBatchNormBase]:
    class InferenceBatchNorm(rule_class):  # type: ignore[valid-type,misc]  # a base chosen at run time
        def check(self, context, x, inbound_out, batchnorm_out):
            result = super().check(context, x, inbound_out, batchnorm_out)
            node = batchnorm_out.producer()
            if result and (node.attributes.get_int("training_mode", 0) or len(node.outputs) > 1):
                return result.fail("training-mode BatchNormalization updates its statistics")
            return result

    InferenceBatchNorm.__name__ = rule_class.__name__
    return InferenceBatchNorm


BATCHNORM_FOLD = rule_pass(
    "batchnorm-fold",
    "BatchNormalization after a Conv, ConvTranspose or Gemm with constant parameters folded into its "
    "weights and bias (our export folds in PyTorch already; for foreign ONNX files)",
    [_inference_only(cls)().rule() for cls in (FuseBatchNormIntoConv, FuseBatchNormIntoConvTranspose,
                                                FuseBatchNormIntoGemm)],
    category="conv",
)
