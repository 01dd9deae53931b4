"""HVT: Scalable Vision Transformers with Hierarchical Pooling (Pan et al., ICCV 2021).

Re-implemented from the facts in `docs/models.md` (official zhuang-group/HVT @ f32cc1c):
no cls token; a 1-D `MaxPool1d(3, stride 2)` over the flattened raster token sequence after the
first block of each stage, followed by that stage's own learned position embedding; final
LayerNorm, mean over the remaining tokens, linear head. Key layout matches the official
checkpoints: `blocks.{i}.pos_embed` exists only on pooling blocks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .finetune import EmbedLayout, FineTuning
from .layers import Block, PatchEmbed, init_vit_weights
from .registry import ModelInfo, register_model


def pooled_length(length: int, kernel: int, stride: int) -> int:
    return math.floor((length - kernel) / stride + 1)


def pooling_blocks(depth: int, pool_block_width: int | None) -> list[int]:
    """Indices of blocks followed by a pooling layer (the official `i % width == 0`).

    Width 0/None means no pooling at all: HVT-S-0, which the official code cannot build.
    """
    if not pool_block_width:
        return []
    return [i for i in range(depth) if i % pool_block_width == 0]


class HVTBlock(Block):
    """A transformer block, optionally followed by token max-pooling and a new position embedding."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, pool: tuple[int, int] | None,
                 pooled_tokens: int = 0, norm_eps: float = 1e-6, qkv_bias: bool = True):
        super().__init__(dim, num_heads, mlp_hidden, qkv_bias=qkv_bias, norm_eps=norm_eps)
        if pool is None:
            self.downsample = None
        else:
            kernel, stride = pool
            self.downsample = nn.MaxPool1d(kernel_size=kernel, stride=stride)
            self.pos_embed = nn.Parameter(torch.zeros(1, pooled_tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.downsample is not None:
            # 1-D pooling along the token axis: crosses image-row boundaries, as the paper's model does.
            x = self.downsample(x.transpose(1, 2)).transpose(1, 2)
            x = x + self.pos_embed
        return x


class HVT(nn.Module):
    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        pool_block_width: int | None = 12,
        pool_kernel_size: int = 3,
        pool_stride: int = 2,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        tokens = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        pool_at = set(pooling_blocks(depth, pool_block_width))
        blocks = []
        self.token_counts = [tokens]
        for i in range(depth):
            pool = (pool_kernel_size, pool_stride) if i in pool_at else None
            if pool:
                tokens = pooled_length(tokens, pool_kernel_size, pool_stride)
                self.token_counts.append(tokens)
            blocks.append(HVTBlock(embed_dim, num_heads, int(embed_dim * mlp_ratio), pool=pool,
                                   pooled_tokens=tokens, norm_eps=norm_eps, qkv_bias=qkv_bias))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for block in self.blocks:
            pos_embed = getattr(block, "pos_embed", None)  # pooling blocks only
            if isinstance(pos_embed, nn.Parameter):
                nn.init.trunc_normal_(pos_embed, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def hvt(**kwargs: Any) -> HVT:
    # The official builder: embed_dim = 64 * num_heads.
    kwargs.setdefault("embed_dim", 64 * kwargs.get("num_heads", 6))
    return HVT(**kwargs)


def _layout(key: str, config: Any) -> EmbedLayout | None:
    # The stem's embedding is a grid of patches; a pooling block's follows the 1-D pool over the raster sequence.
    if key == "pos_embed":
        return EmbedLayout("grid")
    if key.startswith("blocks.") and key.endswith(".pos_embed"):
        return EmbedLayout("sequence")
    return None


FINE_TUNING = FineTuning(
    head_key="head.weight", stem_embedding="pos_embed", token_pixels=lambda config: config.get("patch_size", 16),
    size_multiple=lambda config: config.get("patch_size", 16), layout=_layout)

_SOURCE = "zhuang-group/HVT README (ImageNet-1k val top-1)"


def _register(name: str, heads: int, width: int | None, params_m: float, macs_g: float,
              top1: float, published_macs: float, published_params: float | None,
              aliases: tuple[str, ...] = (), notes: str = "") -> None:
    register_model(ModelInfo(
        name=name, family="hvt", builder=hvt,
        config={"num_heads": heads, "pool_block_width": width},
        params_m=params_m, macs_g=macs_g,
        published_top1=top1, published_source=_SOURCE,
        published_macs_g=published_macs, published_params_m=published_params,
        aliases=aliases, notes=notes, fine_tuning=FINE_TUNING,
    ))


# params_m / macs_g: this implementation's counts (see tests/test_models.py).
_register("hvt_ti_1", 3, 12, 5.736, 0.642, 69.64, 0.64, 5.74, aliases=("hvt_ti",),
          notes="retrained weights")
_register("hvt_s_0", 6, None, 22.050, 4.574, 80.39, 4.57, None,
          notes="no pooling; not buildable with the official models.py")
_register("hvt_s_1", 6, 12, 22.087, 2.402, 78.00, 2.40, None, aliases=("hvt_s",),
          notes="retrained weights")
_register("hvt_s_2", 6, 6, 22.106, 1.941, 77.36, 1.94, None)
_register("hvt_s_3", 6, 4, 22.114, 1.620, 76.32, 1.62, None)
_register("hvt_s_4", 6, 3, 22.119, 1.394, 75.23, 1.39, 22.12, aliases=("scale_hvt_ti_4",),
          notes="released as scale_hvt_ti_4.pth (6 heads, 384 dims)")
