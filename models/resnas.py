"""ViT-ResNAS: Searching for Efficient Multi-Stage Vision Transformers (Liao, Karaman, Sze 2021).

Re-implemented from the facts in `docs/models.md` and the official yilunliao/vit-search @ 303e7c3
(`nets/vit_sr_supernet.py`, `nets/patch_conv.py`, `nets/supernet_blocks.py`), inference path of
`flexible_vit_sr_patch14_224_patch_output` only (no supernet channel masks, no distillation token).

The architecture is a `network_def`: a tuple of block definitions, interpreted in order.
- `(4, C)`: convolutional stem (`PatchConvEmbed`, 24 mid channels) to C-wide patch tokens, patch 14.
- `(1, (C, heads, head_dim), (C, mlp_hidden), exists)`: pre-norm transformer block; the attention's
  inner width is `heads * head_dim`, independent of C. `exists == 0` is a parameter-free bypass.
- `(3, Cin, Cout)`: residual spatial reduction, halving the token grid and widening to Cout.
- `(2, C, num_classes)`: final LayerNorm on the cls token and the linear classifier.

Deliberate departures from the official code, none of which change the function:
- the residual zero-padding uses `F.pad` instead of a `torch.zeros(...).cuda()` tensor built in
  `__init__`, so the model builds without CUDA and exports without a baked-in constant;
- the training-only `patch_head` is not built; `checkpoint_filter` drops its keys;
- drop-path and dropout are training-only and omitted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .finetune import EmbedLayout, FineTuning
from .layers import Block, check_image_size, init_vit_weights
from .registry import ModelInfo, register_model

STEM, TRANSFORMER, HEAD, SPATIAL_REDUCTION = 4, 1, 2, 3

NetworkDef = tuple[tuple[Any, ...], ...]

# Searched networks, verbatim from yilunliao/vit-search @ 303e7c3
# scripts/vit-sr-nas/searched_net/tiny.sh (--network-def).
VIT_RESNAS_TINY: NetworkDef = (
    (4, 176),
    (1, (176, 3, 32), (176, 704), 1),
    (1, (176, 3, 32), (176, 576), 1),
    (1, (176, 3, 32), (176, 640), 1),
    (1, (176, 4, 32), (176, 576), 1),
    (1, (176, 4, 32), (176, 704), 1),
    (3, 176, 352),
    (1, (352, 10, 48), (352, 1408), 1),
    (1, (352, 8, 48), (352, 1408), 1),
    (1, (352, 8, 48), (352, 1280), 1),
    (1, (352, 8, 48), (352, 1408), 1),
    (1, (352, 10, 48), (352, 1280), 1),
    (1, (352, 10, 48), (352, 1024), 1),
    (3, 352, 704),
    (1, (704, 10, 64), (704, 2560), 1),
    (1, (704, 10, 64), (704, 1792), 1),
    (1, (704, 10, 64), (704, 2816), 1),
    (1, (704, 8, 64), (704, 2816), 1),
    (1, (704, 8, 64), (704, 2560), 1),
    (2, 704, 1000),
)

# scripts/vit-sr-nas/searched_net/small_mac@2.9G.sh
VIT_RESNAS_SMALL: NetworkDef = (
    (4, 220),
    (1, (220, 5, 32), (220, 880), 1),
    (1, (220, 5, 32), (220, 880), 1),
    (1, (220, 7, 32), (220, 800), 1),
    (1, (220, 5, 32), (220, 720), 1),
    (1, (220, 5, 32), (220, 720), 1),
    (1, (220, 5, 32), (220, 720), 1),
    (3, 220, 440),
    (1, (440, 10, 48), (440, 1760), 1),
    (1, (440, 10, 48), (440, 1440), 1),
    (1, (440, 10, 48), (440, 1920), 1),
    (1, (440, 10, 48), (440, 1600), 1),
    (1, (440, 12, 48), (440, 1600), 1),
    (1, (440, 12, 48), (440, 1440), 1),
    (3, 440, 880),
    (1, (880, 16, 64), (880, 3200), 1),
    (1, (880, 12, 64), (880, 3200), 1),
    (1, (880, 16, 64), (880, 2880), 1),
    (1, (880, 12, 64), (880, 2240), 1),
    (1, (880, 14, 64), (880, 2560), 1),
    (2, 880, 1000),
)

# scripts/vit-sr-nas/searched_net/medium_mac@4.6G.sh
VIT_RESNAS_MEDIUM: NetworkDef = (
    (4, 240),
    (1, (240, 7, 32), (240, 960), 1),
    (1, (240, 6, 32), (240, 960), 1),
    (1, (240, 7, 32), (240, 800), 1),
    (1, (240, 8, 32), (240, 960), 1),
    (1, (240, 7, 32), (240, 880), 1),
    (1, (240, 8, 32), (240, 880), 1),
    (1, (240, 6, 32), (240, 800), 1),
    (3, 240, 640),
    (1, (640, 10, 48), (640, 1120), 1),
    (1, (640, 14, 48), (640, 1760), 1),
    (1, (640, 14, 48), (640, 1920), 1),
    (1, (640, 16, 48), (640, 1760), 1),
    (1, (640, 14, 48), (640, 1440), 1),
    (1, (640, 16, 48), (640, 1760), 1),
    (1, (640, 16, 48), (640, 1920), 1),
    (3, 640, 880),
    (1, (880, 16, 64), (880, 3200), 1),
    (1, (880, 10, 64), (880, 3840), 1),
    (1, (880, 16, 64), (880, 3840), 1),
    (1, (880, 12, 64), (880, 3200), 1),
    (1, (880, 16, 64), (880, 3520), 1),
    (1, (880, 14, 64), (880, 3520), 1),
    (2, 880, 1000),
)


class ConvBnAct(nn.Module):
    """Conv (no bias) + BatchNorm2d + ReLU; `conv`/`bn` are the official keys (foldable)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class PatchConvEmbed(nn.Module):
    """Official `PatchConvEmbed`: stride-2 conv, two residual convs, then a (patch/2)-strided projection."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, mid_chans: int = 24):
        super().__init__()
        if patch_size % 2 or img_size % patch_size:
            raise ValueError(f"patch size {patch_size} must be even and divide the image size {img_size}")
        self.img_size = img_size
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.conv1 = ConvBnAct(in_chans, mid_chans, stride=2)
        self.conv2 = ConvBnAct(mid_chans, mid_chans)
        self.conv3 = ConvBnAct(mid_chans, mid_chans)
        self.conv_proj = nn.Conv2d(mid_chans, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.img_size)
        x = self.conv1(x)
        # The residual is conv1's activated output, added after conv3's ReLU.
        x = x + self.conv3(self.conv2(x))
        return self.conv_proj(x).flatten(2).transpose(1, 2)


class ResidualSpatialReduction(nn.Module):
    """Official `SpatialReductionPatchEmbedding` (patch size 2, one cls token).

    Main path on LayerNorm-ed tokens: patches -> 3x3 stride-2 conv -> + new pos_embed; cls token ->
    Linear. Residual path on the *un-normalised* tokens: patches -> 2x2 average pool; the cls token as
    is; both zero-padded from Cin to Cout channels.
    """

    def __init__(self, grid: int, in_dim: int, out_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        if out_dim < in_dim:
            raise ValueError(f"spatial reduction cannot narrow the width ({in_dim} -> {out_dim})")
        if grid % 2:
            raise ValueError(f"spatial reduction needs an even token grid, got {grid}x{grid}")
        self.grid = grid
        self.out_grid = grid // 2
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.norm = nn.LayerNorm(in_dim, eps=norm_eps)
        self.patch_reduce = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.patch_pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.token_transform = nn.Linear(in_dim, out_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.out_grid * self.out_grid, out_dim))

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).unflatten(2, (self.grid, self.grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm(x)
        patches = self.patch_reduce(self._to_map(normed[:, 1:])).flatten(2).transpose(1, 2) + self.pos_embed
        cls_token = self.token_transform(normed[:, :1])
        pooled = self.patch_pool(self._to_map(x[:, 1:])).flatten(2).transpose(1, 2)
        residual = F.pad(torch.cat([x[:, :1], pooled], dim=1), (0, self.out_dim - self.in_dim))
        return torch.cat([cls_token, patches], dim=1) + residual


class ViTResNAS(nn.Module):
    """Multi-stage ViT from a `network_def`, official key layout (`tokens`, `blocks.{i}`, `cls_head`)."""

    def __init__(self, network_def: NetworkDef, img_size: int = 224, patch_size: int = 14,
                 in_chans: int = 3, norm_eps: float = 1e-6):
        super().__init__()
        network_def = tuple(network_def)
        stem, body, head = network_def[0], network_def[1:-1], network_def[-1]
        if stem[0] != STEM or head[0] != HEAD:
            raise ValueError(
                "a ViT-ResNAS network_def starts with a (4, C) stem and ends with a (2, C, classes) head"
            )
        self.network_def = network_def
        embed_dim = stem[1]
        self.patch_embed = PatchConvEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid
        self.tokens = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        blocks: list[nn.Module] = []
        for i, block_def in enumerate(body, start=1):
            kind = block_def[0]
            if kind == TRANSFORMER:
                _, (dim, heads, head_dim), (ffn_dim, mlp_hidden), exists = block_def
                if dim != embed_dim or ffn_dim != embed_dim:
                    raise ValueError(f"network_def[{i}]: width {dim}/{ffn_dim}, expected {embed_dim}")
                # A non-existent block is a parameter-free bypass; it still takes a `blocks` index.
                blocks.append(Block(embed_dim, heads, mlp_hidden, head_dim=head_dim, norm_eps=norm_eps)
                              if exists else nn.Identity())
            elif kind == SPATIAL_REDUCTION:
                _, in_dim, out_dim = block_def
                if in_dim != embed_dim:
                    raise ValueError(f"network_def[{i}]: reduction input {in_dim}, expected {embed_dim}")
                blocks.append(ResidualSpatialReduction(grid, in_dim, out_dim, norm_eps))
                embed_dim, grid = out_dim, grid // 2
            else:
                raise ValueError(f"network_def[{i}]: unknown block type {kind}")
        if head[1] != embed_dim:
            raise ValueError(f"head width {head[1]} does not match the last stage width {embed_dim}")
        self.blocks = nn.ModuleList(blocks)
        self.num_classes = head[2]
        self.embed_dim = self.num_features = embed_dim
        self.img_size = img_size
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.cls_head = nn.Linear(embed_dim, self.num_classes) if self.num_classes else nn.Identity()
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.tokens, std=0.02)
        for block in self.blocks:
            if isinstance(block, ResidualSpatialReduction):
                nn.init.trunc_normal_(block.pos_embed, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised cls token, (B, 1, C); the official model normalises only that token."""
        x = self.patch_embed(x)
        x = torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, :1])

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def vit_resnas(network_def: NetworkDef, num_classes: int | None = None, **kwargs: Any) -> ViTResNAS:
    """Build from `network_def`; `num_classes` (as every family's config takes it) replaces the head's class count."""
    if num_classes is not None:
        head = network_def[-1]
        network_def = (*network_def[:-1], (*head[:2], num_classes))
    return ViTResNAS(network_def, **kwargs)


def drop_patch_head(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Official checkpoints carry the training-only ShiftTokenMixup `patch_head`; inference drops it."""
    return {k: v for k, v in state_dict.items() if not k.startswith("patch_head.")}


def _layout(key: str, config: Any) -> EmbedLayout | None:
    # The stem's grid follows the cls token; each spatial reduction's new grid has no token in front.
    if key == "pos_embed":
        return EmbedLayout("grid", 1)
    if key.startswith("blocks.") and key.endswith(".pos_embed"):
        return EmbedLayout("grid")
    return None


def _size_multiple(config: Any) -> int:
    reductions = sum(1 for block in config["network_def"] if block[0] == SPATIAL_REDUCTION)
    return config.get("patch_size", 14) * 2**reductions  # each reduction halves an even token grid


FINE_TUNING = FineTuning(
    head_key="cls_head.weight", stem_embedding="pos_embed", token_pixels=lambda config: config.get("patch_size", 14),
    size_multiple=_size_multiple, layout=_layout)

_NOTES = ("published top-1 not retrieved: the repo gives no table (only fig/acc_mac.png) and the paper "
          "tables (arXiv 2109.00642) were not available; EMA weights load by default, as the official "
          "--eval does")


def _register(name: str, network_def: NetworkDef, params_m: float, macs_g: float,
              published_macs: float, script: str) -> None:
    register_model(ModelInfo(
        name=name, family="resnas", builder=vit_resnas, config={"network_def": network_def},
        params_m=params_m, macs_g=macs_g,
        # datasets.py: Resize(int(256 / 224 * size)) + CenterCrop, bicubic, timm ImageNet mean/std.
        crop_pct=0.875, interpolation="bicubic",
        published_top1=None, published_source="",
        published_macs_g=published_macs,
        checkpoint_filter=drop_patch_head,
        checkpoint_keys=("model_ema", "model", "state_dict"),
        notes=_NOTES,
        extra={"network_def_source": f"yilunliao/vit-search@303e7c3 {script}"},
        fine_tuning=FINE_TUNING,
    ))


# params_m / macs_g: this implementation's counts (see tests/test_resnas.py); published MACs are the
# official `network_utils/compute_flop_mac.py` estimate at 224 (docs/models.md, ViT-ResNAS).
_register("vit_resnas_tiny", VIT_RESNAS_TINY, 40.794, 1.783, 1.78,
          "scripts/vit-sr-nas/searched_net/tiny.sh")
_register("vit_resnas_small", VIT_RESNAS_SMALL, 63.724, 2.846, 2.85,
          "scripts/vit-sr-nas/searched_net/small_mac@2.9G.sh")
_register("vit_resnas_medium", VIT_RESNAS_MEDIUM, 96.443, 4.513, 4.51,
          "scripts/vit-sr-nas/searched_net/medium_mac@4.6G.sh")
