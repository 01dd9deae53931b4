"""Parameter and MAC counts, measured on the meta device so even the largest variant is free to count."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def meta_model(name: str) -> nn.Module:
    """A zoo model on the meta device: shapes, parameter counts and MACs without allocating weights."""
    from . import get_model_info

    with torch.device("meta"):
        return get_model_info(name).build()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> int:
    """MACs = FLOPs / 2 of matmuls, convolutions and attention, as `FlopCounterMode` counts them.

    Run on the meta device: on CPU, `scaled_dot_product_attention` dispatches to a kernel the flop
    counter has no formula for, which would silently drop the q@k and attn@v products.
    """
    meta_model = model if _is_meta(model) else _to_meta(model)
    x = torch.empty(batch, *input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model.eval()(x)
    return counter.get_total_flops() // 2


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")
