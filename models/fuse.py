"""Fold eval-mode BatchNorm2d into the Conv2d that feeds it, for deployment graphs.

CvT's q/k/v projections (depthwise conv + BN) and the ViT-ResNAS stem (conv + BN + ReLU) carry
BatchNorm2d layers that exporters and runtimes otherwise keep as separate normalisation nodes.
Folding is exact up to float rounding in eval mode; it freezes the running statistics, so load
weights first and fuse afterwards (the fused state dict no longer has the official key layout).
"""

from __future__ import annotations

import copy

import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Set on the returned model (how many layers were folded) so that manifests can record the transformation.
FUSED_COUNT_ATTR = "num_batchnorm_fused"


def _conv_bn_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) child-name pairs of `parent` where the BN's only input is the conv's output.

    Found by tracing `parent` with torch.fx rather than trusting registration order: a BN is only
    foldable when it consumes the conv output and nothing else reads that output. Modules that do
    not trace (shape-dependent control flow) are skipped, never guessed at.
    """
    children = dict(parent.named_children())
    if not any(isinstance(m, nn.Conv2d) for m in children.values()) or not any(
        isinstance(m, nn.BatchNorm2d) for m in children.values()
    ):
        return []
    try:
        graph = torch.fx.symbolic_trace(parent).graph
    except Exception:  # any tracing failure means "do not fuse here"
        return []
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(children.get(str(node.target)), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(children.get(str(source.target)), nn.Conv2d)
            and len(source.users) == 1
            and len(node.args) == 1
            and not node.kwargs
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of `model` with every Conv2d -> BatchNorm2d pair folded into the conv.

    The conv gains a bias if it had none; the BatchNorm2d is replaced by `nn.Identity`, so module
    code that calls it keeps working. The copy carries `num_batchnorm_fused` (how many layers were
    folded, possibly 0); the input model is left untouched.
    """
    fused = copy.deepcopy(model).eval()
    count = 0
    for parent in list(fused.modules()):
        for conv_name, bn_name in _conv_bn_pairs(parent):
            conv = getattr(parent, conv_name)
            bn = getattr(parent, bn_name)
            if bn.num_features != conv.out_channels or not bn.track_running_stats:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
            count += 1
    setattr(fused, FUSED_COUNT_ATTR, count)
    return fused


def is_batchnorm_fused(model: nn.Module) -> bool:
    return hasattr(model, FUSED_COUNT_ATTR)


def folded(model: nn.Module) -> nn.Module:
    """`model` with its BatchNorm folded (a copy), or `model` itself when it has none to fold."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    return fuse_batchnorm(model)
