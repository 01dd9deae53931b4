"""DeiT (Touvron et al., 2021): the plain ViT baseline, timm/DeiT checkpoint key layout.

A cls token and a (1, 1 + patches, dim) position embedding; the head reads the normalised cls token.
The distilled DeiTs add a distillation token after it (`dist_token`, position embedding 2 + patches) and
a second head on it (`dist_head`), whose logits are averaged with the cls head's at inference, as timm's
`VisionTransformerDistilled` and Hugging Face's `DeiTForImageClassificationWithTeacher` do; Hugging Face's
`DeiTForImageClassification` keeps the token but reads the cls head only. Hugging Face's ViT is this model
with its own LayerNorm epsilon and activation (`norm_eps`, `act`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .finetune import EmbedLayout, FineTuning
from .layers import Block, PatchEmbed, activation, init_vit_weights
from .registry import ModelInfo, register_model


class DeiT(nn.Module):
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
        norm_eps: float = 1e-6,
        dist_token: bool = False,
        dist_head: bool = False,
        act: str = "gelu",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 2 if dist_token else 1
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if dist_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, int(embed_dim * mlp_ratio), qkv_bias=qkv_bias, norm_eps=norm_eps,
                  act_layer=activation(act))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        if dist_head and not dist_token:
            raise ValueError("a distillation head reads the distillation token: dist_head needs dist_token")
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()) if dist_head else None
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_dist is not None:  # inference averages the two heads (timm, Hugging Face)
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def deit(**kwargs: Any) -> DeiT:
    kwargs.setdefault("embed_dim", 64 * kwargs.get("num_heads", 6))
    return DeiT(**kwargs)


def _layout(key: str, config: Any) -> EmbedLayout | None:
    return EmbedLayout("grid", 2 if config.get("dist_token") else 1) if key == "pos_embed" else None


FINE_TUNING = FineTuning(
    head_key="head.weight", stem_embedding="pos_embed", token_pixels=lambda config: config.get("patch_size", 16),
    size_multiple=lambda config: config.get("patch_size", 16), layout=_layout)

_SOURCE = "DeiT paper, Touvron et al. 2021, Table 1 (ImageNet-1k val top-1, no distillation)"

register_model(ModelInfo(
    name="deit_ti", family="deit", builder=deit, config={"num_heads": 3},
    params_m=5.717, macs_g=1.254, published_top1=72.2, published_source=_SOURCE,
    published_macs_g=1.3, published_params_m=5.0, aliases=("deit_tiny_patch16_224", "deit_tiny"),
    fine_tuning=FINE_TUNING,
))
register_model(ModelInfo(
    name="deit_s", family="deit", builder=deit, config={"num_heads": 6},
    params_m=22.051, macs_g=4.599, published_top1=79.8, published_source=_SOURCE,
    published_macs_g=4.6, published_params_m=22.0, aliases=("deit_small_patch16_224", "deit_small"),
    fine_tuning=FINE_TUNING,
))
