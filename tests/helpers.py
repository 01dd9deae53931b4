"""Model builders and checks the test files share (imported as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

import models


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


def small_cvt() -> nn.Module:
    """A 64x64 CvT of three one-block stages (1, 2, 3 heads), trained-like BatchNorm folded into its convs."""
    from models.cvt import CvT
    from models.fuse import fuse_batchnorm

    torch.manual_seed(0)
    return fuse_batchnorm(randomise_batchnorm(CvT(embed_dims=(16, 32, 48), depths=(1, 1, 1), num_heads=(1, 2, 3),
                                                  num_classes=10)))


def small_resnas() -> nn.Module:
    """A 28x28 ViT-ResNAS with one residual spatial reduction, trained-like BatchNorm folded in."""
    from models.fuse import fuse_batchnorm
    from models.resnas import ViTResNAS

    torch.manual_seed(0)
    network_def = ((4, 16), (1, (16, 2, 8), (16, 40), 1), (3, 16, 24), (1, (24, 3, 8), (24, 48), 1), (2, 24, 10))
    return fuse_batchnorm(randomise_batchnorm(ViTResNAS(network_def, img_size=28)))


def stage_heads(name: str) -> dict:
    """Config overrides cutting each stage of the zoo variant `name` to its first block (HVT keeps every pooling
    stage, one block before each): the same ops, widths and stage layout at 224, converted in seconds."""
    info = models.get_model_info(name)
    config = dict(info.config)
    if info.family == "hvt":
        poolings = len(range(0, 12, config["pool_block_width"])) if config["pool_block_width"] else 0
        return {"depth": max(1, poolings), "pool_block_width": 1 if poolings else None}
    if info.family == "deit":
        return {"depth": 1}
    if info.family == "cvt":
        return {"depths": tuple(1 for _ in config["depths"])}
    if info.family == "resnas":
        # network_def: a stem, blocks (kind 1), reductions between stages and the head; keep each stage's first block.
        kept, after_boundary = [], True
        for layer in config["network_def"]:
            if layer[0] != 1 or after_boundary:
                kept.append(layer)
            after_boundary = layer[0] != 1
        return {"network_def": tuple(kept)}
    raise AssertionError(f"no stage cut for family {info.family}")


def error_line(stderr: str, notes_allowed: bool = True) -> str:
    """The one `error:` line a refused command printed (with `note:` lines beside it unless `notes_allowed` is
    False), and no traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if not (notes_allowed and line.startswith("note: "))]
    assert len(errors) == 1 and errors[0].startswith("error: "), lines
    assert "Traceback" not in stderr
    return errors[0]
