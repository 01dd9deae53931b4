"""CvT: Introducing Convolutions to Vision Transformers (Wu et al., ICCV 2021).

Re-implemented from the facts in `docs/models.md` (official microsoft/CvT @ f851e68,
`lib/models/cls_cvt.py`, `experiments/imagenet/cvt/*.yaml`). Three stages, each a convolutional
token embedding (conv + LayerNorm) followed by pre-norm transformer blocks whose q/k/v come from
depthwise-conv + BatchNorm projections (`dw_bn`; k and v at stride 2). Only the last stage has a
cls token; it bypasses the convolutions. No position embedding. The head reads the normalised cls
token. The state-dict key layout is the official one, so the raw official checkpoints load strictly.

Deliberate departures from the official code, none of which change the function:
- attention is `F.scaled_dot_product_attention` with the official scale (`dim ** -0.5`, the full
  stage width) instead of einsum + einops, so the ONNX graph is plain MatMul/Softmax;
- `torch.squeeze(x)` before the head is replaced by indexing the cls token, so batch 1 works
  (microsoft/CvT#24);
- the official LayerNorm subclass upcasts to fp32 and back; we use `nn.LayerNorm` (identical in
  fp32) so fp16 graphs carry no Cast nodes;
- drop-path and dropout are training-only and omitted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .finetune import FineTuning
from .layers import ActLayer, Mlp, QuickGELU, activation, init_vit_weights
from .registry import ModelInfo, register_model

__all__ = ["CvT", "QuickGELU", "cvt"]


class ConvEmbed(nn.Module):
    """Overlapping strided convolution, then LayerNorm over channels; returns tokens and the grid."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: int, padding: int,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2], x.shape[-1]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class DepthwiseBnProjection(nn.Module):
    """The official `dw_bn` projection: depthwise 3x3 conv (no bias) + BatchNorm2d, then to tokens.

    Child names `conv` and `bn` are the official keys; `models.fuse.fuse_batchnorm` folds `bn`
    into `conv` for deployment.
    """

    def __init__(self, dim: int, stride: int, kernel: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=kernel, stride=stride, padding=padding,
                              groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).flatten(2).transpose(1, 2)


class ConvAttention(nn.Module):
    """Multi-head attention over conv-projected q, k, v (separate `proj_q/k/v`, official layout)."""

    def __init__(self, dim: int, num_heads: int, *, with_cls_token: bool, qkv_bias: bool = True,
                 stride_q: int = 1, stride_kv: int = 2):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CvT stage width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # The official code scales by the full stage width, not head_dim; the checkpoints depend on it.
        self.scale = dim**-0.5
        self.with_cls_token = with_cls_token
        self.conv_proj_q = DepthwiseBnProjection(dim, stride_q)
        self.conv_proj_k = DepthwiseBnProjection(dim, stride_kv)
        self.conv_proj_v = DepthwiseBnProjection(dim, stride_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, dim) -> (B, heads, T, head_dim), sizes fixed at build time.
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if self.with_cls_token:
            # The cls token skips the convolutions and is put back in front of q, k and v.
            cls_token, x = x[:, :1], x[:, 1:]
        grid = x.transpose(1, 2).unflatten(2, (height, width))
        q = self.conv_proj_q(grid)
        k = self.conv_proj_k(grid)
        v = self.conv_proj_v(grid)
        if self.with_cls_token:
            q = torch.cat([cls_token, q], dim=1)
            k = torch.cat([cls_token, k], dim=1)
            v = torch.cat([cls_token, v], dim=1)
        q = self._split_heads(self.proj_q(q))
        k = self._split_heads(self.proj_k(k))
        v = self._split_heads(self.proj_v(v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).flatten(2))


class CvTBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), QuickGELU MLP (the official checkpoints')."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, with_cls_token: bool,
                 qkv_bias: bool = True, norm_eps: float = 1e-5, act_layer: ActLayer = QuickGELU):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ConvAttention(dim, num_heads, with_cls_token=with_cls_token, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x))


class CvTStage(nn.Module):
    """Conv embedding, optional cls token, blocks. Returns the (B, C, H, W) map and the cls token."""

    def __init__(self, in_chans: int, embed_dim: int, depth: int, num_heads: int, *, kernel: int,
                 stride: int, padding: int, with_cls_token: bool, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-5, act_layer: ActLayer = QuickGELU):
        super().__init__()
        self.patch_embed = ConvEmbed(in_chans, embed_dim, kernel, stride, padding, norm_eps)
        self.with_cls_token = with_cls_token
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(
            CvTBlock(embed_dim, num_heads, mlp_ratio, with_cls_token=with_cls_token,
                     qkv_bias=qkv_bias, norm_eps=norm_eps, act_layer=act_layer)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, height, width = self.patch_embed(x)
        cls_token = None
        if self.with_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x, height, width)
        if self.with_cls_token:
            cls_token, x = x[:, :1], x[:, 1:]
        return x.transpose(1, 2).unflatten(2, (height, width)), cls_token


class CvT(nn.Module):
    """Three `stage{i}` modules (official attribute names), final `norm` and `head`.

    Any input size works (no position embedding); the registered variants fix `img_size` only for
    preprocessing and complexity counts. `mlp_ratio` may be one per stage (Hugging Face's configs list it
    so); `act` is `quick_gelu` for the official checkpoints and `gelu` for Hugging Face's port (see
    docs/models.md, "Hugging Face folders").
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: tuple[int, ...] = (64, 192, 384),
        depths: tuple[int, ...] = (1, 2, 10),
        num_heads: tuple[int, ...] = (1, 3, 6),
        patch_sizes: tuple[int, ...] = (7, 3, 3),
        patch_strides: tuple[int, ...] = (4, 2, 2),
        patch_paddings: tuple[int, ...] = (2, 1, 1),
        mlp_ratio: float | tuple[float, ...] = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        act: str = "quick_gelu",
    ):
        super().__init__()
        num_stages = len(embed_dims)
        ratios = tuple(mlp_ratio) if isinstance(mlp_ratio, (tuple, list)) else (mlp_ratio,) * num_stages
        lengths = {len(t) for t in (depths, num_heads, patch_sizes, patch_strides, patch_paddings, ratios)}
        if lengths != {num_stages}:
            raise ValueError("CvT per-stage settings must all have one entry per stage")
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.embed_dim = self.num_features = embed_dims[-1]
        for i in range(num_stages):
            # Every released config has the cls token in the last stage only.
            stage = CvTStage(
                in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], depths[i], num_heads[i],
                kernel=patch_sizes[i], stride=patch_strides[i], padding=patch_paddings[i],
                with_cls_token=i == num_stages - 1, mlp_ratio=ratios[i], qkv_bias=qkv_bias,
                norm_eps=norm_eps, act_layer=activation(act),
            )
            self.add_module(f"stage{i}", stage)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=norm_eps)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes else nn.Identity()
        self.apply(init_vit_weights)
        for i in range(num_stages):
            stage = getattr(self, f"stage{i}")
            if stage.with_cls_token:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    def stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised cls token, (B, 1, C)."""
        cls_token = None
        for stage in self.stages():
            x, cls_token = stage(x)
        return self.norm(cls_token)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # Index, never squeeze: the official `torch.squeeze(x)` breaks batch size 1.
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cvt(**kwargs: Any) -> CvT:
    return CvT(**kwargs)


# No position embedding: the input size is not in a checkpoint, and any multiple of the total stride works.
FINE_TUNING = FineTuning(
    head_key="head.weight", stem_embedding=None, token_pixels=lambda config: 1,
    size_multiple=lambda config: _stride(config), layout=lambda key, config: None)


def _stride(config: Any) -> int:
    stride = 1
    for s in config.get("patch_strides", (4, 2, 2)):
        stride *= s
    return stride


_CVT_13 = {"embed_dims": (64, 192, 384), "depths": (1, 2, 10), "num_heads": (1, 3, 6)}
_CVT_21 = {"embed_dims": (64, 192, 384), "depths": (1, 4, 16), "num_heads": (1, 3, 6)}
_CVT_W24 = {"embed_dims": (192, 768, 1024), "depths": (2, 2, 20), "num_heads": (3, 12, 16)}

_SOURCE_1K = "microsoft/CvT README (ImageNet-1k trained, ImageNet-1k val top-1)"
_SOURCE_22K = "microsoft/CvT README (ImageNet-22k pre-trained, fine-tuned and evaluated at 384)"
# Official checkpoints are a bare state dict; the container keys only matter for re-saved ones.
_KEYS = ("model", "state_dict")


def _register(name: str, config: dict[str, Any], img_size: int, params_m: float, macs_g: float, *,
              top1: float, source: str, published_macs: float | None, published_params: float | None,
              notes: str = "", extra: dict[str, Any] | None = None) -> None:
    register_model(ModelInfo(
        name=name, family="cvt", builder=cvt, config={**config, "img_size": img_size},
        params_m=params_m, macs_g=macs_g, input_size=(3, img_size, img_size),
        # 224: Resize(256) + CenterCrop(224); 384: CENTER_CROP False, a direct Resize((384, 384)).
        crop_pct=0.875 if img_size == 224 else 1.0, interpolation="bicubic",
        resize="shorter" if img_size == 224 else "squash",
        published_top1=top1, published_source=source,
        published_macs_g=published_macs, published_params_m=published_params,
        checkpoint_keys=_KEYS, notes=notes, extra=extra or {}, fine_tuning=FINE_TUNING,
    ))


# params_m / macs_g: this implementation's counts (see tests/test_cvt.py). The README "GFLOPs" are
# MACs (the official `compute_macs` hook counts a multiply-add as one).
_register("cvt_13", _CVT_13, 224, 19.997, 4.566, top1=81.6, source=_SOURCE_1K,
          published_macs=4.5, published_params=20.0,
          notes="weights: CvT-13-224x224-IN-1k.pth (raw state dict)")
_register("cvt_13_384", _CVT_13, 384, 19.997, 16.269, top1=83.0, source=_SOURCE_1K,
          published_macs=16.3, published_params=20.0,
          notes="ImageNet-22k pre-trained weights of the same architecture: 83.3 top-1",
          extra={"published_top1_in22k": 83.3})
_register("cvt_21", _CVT_21, 224, 31.623, 7.178, top1=82.5, source=_SOURCE_1K,
          published_macs=7.1, published_params=32.0,
          notes="weights: CvT-21-224x224-IN-1k.pth (raw state dict)")
_register("cvt_21_384", _CVT_21, 384, 31.623, 24.849, top1=83.3, source=_SOURCE_1K,
          published_macs=24.9, published_params=32.0,
          notes="ImageNet-22k pre-trained weights of the same architecture: 84.9 top-1",
          extra={"published_top1_in22k": 84.9})
_register("cvt_w24", _CVT_W24, 384, 277.196, 194.222, top1=87.6, source=_SOURCE_22K,
          published_macs=193.2, published_params=277.0,
          notes="ImageNet-22k pre-trained only (CvT-w24-384x384-IN-22k.pth); the README abstract says 87.7")
