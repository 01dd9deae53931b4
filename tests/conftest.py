from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_hvt():
    """A small HVT (3 pooling stages) that exports in about a second."""
    from models.hvt import HVT

    return HVT(img_size=64, patch_size=8, embed_dim=32, depth=6, num_heads=2, pool_block_width=2,
               num_classes=10).eval()
