"""Model builders the test files share (imported as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, as in a trained checkpoint; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(1.0 + 0.3 * torch.randn(n, generator=generator))
            module.bias.data.copy_(0.3 * torch.randn(n, generator=generator))
    return model.eval()


def small_hvt(seed: int = 0) -> nn.Module:
    """A 32x32, two-block HVT with one pooling stage: exports and converts in about a second."""
    from models.hvt import HVT

    torch.manual_seed(seed)
    return HVT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pool_block_width=1,
               num_classes=10).eval()
