"""Building blocks shared by the plain and hierarchical ViTs (DeiT, HVT, ViT-ResNAS).

Plain PyTorch with static shapes. Attention goes through `F.scaled_dot_product_attention`: the
ONNX exporter lowers it to the pre-scaled MatMul/Softmax/MatMul form that TensorRT fuses, and
Core ML (iOS 18+) maps it to its fused attention op when the scale is the default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError

ActLayer = Callable[[], nn.Module]


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)`: the activation the CvT checkpoints were trained with (not exact GELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# Activation names as configs spell them (Hugging Face's `hidden_act` included) -> the module that computes it.
ACTIVATIONS: dict[str, ActLayer] = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "gelu_new": functools.partial(nn.GELU, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
}


def activation(name: str) -> ActLayer:
    """The MLP activation called `name`; one error listing the known ones."""
    if name not in ACTIVATIONS:
        raise ModelError(f"activation {name!r} is not supported; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, act_layer: ActLayer = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a packed qkv projection (timm/DeiT key layout).

    `head_dim` may differ from `dim // num_heads` (ViT-ResNAS searches it per block): the inner
    width is `num_heads * head_dim` and `proj` maps it back to `dim`.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # Default scale (head_dim ** -0.5) on purpose: it is what the checkpoints use, and an
        # explicit scale keeps Core ML from emitting its fused attention op.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act_layer: ActLayer = nn.GELU,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim=head_dim, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution; the input size is fixed by the pos-embeds."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.img_size)
        return self.proj(x).flatten(2).transpose(1, 2)


def check_image_size(x: torch.Tensor, img_size: int) -> None:
    if x.shape[-2] != img_size or x.shape[-1] != img_size:
        raise ValueError(
            f"input is {tuple(x.shape[-2:])} pixels but this model takes {img_size}x{img_size}"
        )


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
