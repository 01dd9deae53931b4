"""Parameter and MAC counts, measured on the meta device so even the largest variant is free to count."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def meta_model(name: str) -> nn.Module:
    """A zoo model on the meta device: shapes, parameter counts and MACs without allocating weights."""
    from .zoo import get_model_info

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


def on_meta(model: nn.Module) -> nn.Module:
    """`model` itself if it is on the meta device, else a meta copy of it (shapes without weights)."""
    return model if _is_meta(model) else _to_meta(model)


def module_classes(model: nn.Module, path: str) -> tuple[str, ...]:
    """The classes from the root down to the module at `path` (`models.hvt.HVT`, `models.hvt.HVTBlock`, ...),
    spelled as the ONNX exporter's `pkg.torch.onnx.class_hierarchy` spells them."""
    classes = [_class_name(model)]
    module = model
    for part in path.split(".") if path else ():
        module = getattr(module, part)
        classes.append(_class_name(module))
    return tuple(classes)


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def macs_by_module(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> dict[str, dict[str, int]]:
    """MACs per module path (`blocks.0.attn.qkv`, "" for the root) and aten op, each module's own ops only.

    `FlopCounterMode` counts every op under each module of its call stack (a block's count holds its
    children's); each module here keeps what is left after its children's counts are taken off, so the
    values sum to `count_macs`. Counted on the meta device, as `count_macs` is.
    """
    meta_model = model if _is_meta(model) else _to_meta(model)
    x = torch.empty(batch, *input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model.eval()(x)
    root = type(meta_model).__name__
    inclusive = {_strip_root(name, root): {str(op): int(n) for op, n in ops.items()}
                 for name, ops in counter.get_flop_counts().items() if name != "Global"}
    own: dict[str, dict[str, int]] = {}
    for path, ops in inclusive.items():
        children = [c for c in inclusive if c != path and _parent(c, inclusive) == path]
        left = {op: n - sum(inclusive[c].get(op, 0) for c in children) for op, n in ops.items()}
        kept = {op: n // 2 for op, n in left.items() if n > 0}
        if kept:
            own[path] = kept
    return own


def _strip_root(name: str, root: str) -> str:
    return "" if name == root else name[len(root) + 1:] if name.startswith(root + ".") else name


def _parent(path: str, paths: dict[str, dict[str, int]]) -> str | None:
    """The nearest enclosing module path that was counted ("" is the root)."""
    if not path:
        return None
    parts = path.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        candidate = ".".join(parts[:cut])
        if candidate in paths:
            return candidate
    return None
