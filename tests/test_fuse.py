"""BatchNorm folding keeps eval outputs and removes every foldable BatchNorm2d."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_batchnorm
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models import create_model
from models.cvt import CvT
from models.fuse import fuse_batchnorm, is_batchnorm_fused
from models.resnas import ViTResNAS


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def assert_same_output(model: nn.Module, fused: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    scale = expected.abs().max().item()
    assert scale > 0
    assert (expected - actual).abs().max().item() <= 1e-5 * scale


def small_cvt() -> CvT:
    torch.manual_seed(0)
    return randomise_batchnorm(CvT(embed_dims=(16, 32, 48), depths=(1, 1, 2), num_heads=(1, 2, 3),
                                   num_classes=10))


def small_resnas() -> ViTResNAS:
    torch.manual_seed(0)
    network_def = ((4, 16), (1, (16, 2, 8), (16, 40), 1), (3, 16, 24), (1, (24, 3, 8), (24, 48), 1),
                   (2, 24, 10))
    return randomise_batchnorm(ViTResNAS(network_def, img_size=28))


def test_fused_cvt_matches() -> None:
    model = small_cvt()
    fused = fuse_batchnorm(model)
    assert count_bn(model) == 3 * 4  # q, k, v in each of the 4 blocks; the original is untouched
    assert count_bn(fused) == 0
    assert fused.num_batchnorm_fused == 12
    assert is_batchnorm_fused(fused) and not is_batchnorm_fused(model)
    assert fused.stage2.blocks[0].attn.conv_proj_k.conv.bias is not None
    assert_same_output(model, fused, torch.randn(2, 3, 64, 64))


def test_fused_resnas_matches() -> None:
    model = small_resnas()
    fused = fuse_batchnorm(model)
    assert count_bn(fused) == 0 and fused.num_batchnorm_fused == 3
    assert isinstance(fused.patch_embed.conv1.bn, nn.Identity)
    assert_same_output(model, fused, torch.randn(2, 3, 28, 28))


def test_fuse_returns_eval_mode_and_keeps_zoo_attributes() -> None:
    with torch.device("meta"):
        model = create_model("vit_resnas_tiny").train()
    fused = fuse_batchnorm(model)
    assert not fused.training
    assert fused.model_info.name == "vit_resnas_tiny"
    assert model.training  # the input was copied, not modified


class _NotFoldable(nn.Module):
    """conv's output is read twice, so folding the BN into it would change the other use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_conv_output_with_other_users_is_not_folded() -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(_NotFoldable())
    fused = fuse_batchnorm(model)
    assert fused.num_batchnorm_fused == 0 and isinstance(fused.bn, nn.BatchNorm2d)
    assert_same_output(model, fused, torch.randn(1, 3, 8, 8))


@settings(max_examples=15, deadline=None)
@given(
    channels=st.integers(1, 8),
    depthwise=st.booleans(),
    stride=st.integers(1, 2),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_fold_is_exact_for_any_conv_bn(channels: int, depthwise: bool, stride: int, bias: bool,
                                       seed: int) -> None:
    torch.manual_seed(seed)
    in_chans = channels if depthwise else 3
    model = nn.Sequential(
        nn.Conv2d(in_chans, channels, 3, stride=stride, padding=1, groups=channels if depthwise else 1,
                  bias=bias),
        nn.BatchNorm2d(channels),
        # GELU, not ReLU: a one-channel ReLU output can be all zero, leaving no scale to compare against.
        nn.GELU(),
    )
    model = randomise_batchnorm(model, seed)
    fused = fuse_batchnorm(model)
    assert fused.num_batchnorm_fused == 1 and isinstance(fused[1], nn.Identity)
    assert_same_output(model, fused, torch.randn(2, in_chans, 9, 9))


@pytest.mark.parametrize("name", ["cvt_13", "vit_resnas_tiny"])
def test_full_size_models_lose_every_batchnorm(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    fused = fuse_batchnorm(model)
    assert count_bn(model) > 0 and count_bn(fused) == 0
    assert fused.num_batchnorm_fused == count_bn(model)
