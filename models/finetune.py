"""Fine-tuned checkpoints of a zoo variant: another number of classes, another input size.

Each family says, in a `FineTuning` on its `ModelInfo`, where its classifier is, how many pixels one token
of its stem's position embedding covers, which input sizes it can take, and how each of its position
embeddings is laid out. From that:

- `checkpoint_overrides` reads the class count from the classifier's shape and the input size from the
  stem's position-embedding length (CvT has no position embedding: its size is not in the checkpoint);
- `resample_position_embeddings` resizes a checkpoint's embeddings to the model built at another size.
  A grid embedding (the stem's tokens, ViT-ResNAS's reduced grids) is resampled as timm's
  `resample_abs_pos_embed` does: bicubic over the 2-D grid, antialiased, the cls/distillation tokens'
  entries kept as they are. HVT's pooled embeddings (after each 1-D max pool over the flattened raster
  sequence) have no 2-D grid: the pool crosses row boundaries, so their entries are ordered positions along
  the sequence only, and they are resampled linearly along it (see docs/models.md, "Fine-tuned sizes").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ModelError


class EmbedLayout(NamedTuple):
    """How one position embedding is laid out: a square grid after `prefix` token entries, or a sequence."""

    kind: Literal["grid", "sequence"]
    prefix: int = 0


@dataclass(frozen=True)
class FineTuning:
    """A family's fine-tuning facts (timm's `checkpoint_filter_fn` role, for size and class changes)."""

    head_key: str  # the classifier's weight in the state dict: (num_classes, width)
    stem_embedding: str | None  # the stem's position embedding, whose length gives the input size
    token_pixels: Callable[[Mapping[str, Any]], int]  # pixels per token side of the stem embedding's grid
    size_multiple: Callable[[Mapping[str, Any]], int]  # input sizes must be multiples of this
    layout: Callable[[str, Mapping[str, Any]], EmbedLayout | None]  # per state-dict key; None: not an embedding

    def check_size(self, img_size: int, config: Mapping[str, Any], name: str) -> None:
        multiple = self.size_multiple(config)
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < multiple or img_size % multiple:
            raise ModelError(f"--img-size {img_size}: {name} takes sizes that are multiples of {multiple} "
                             f"(its patch stride{' and token-grid halvings' if multiple > 16 else ''}), "
                             f"e.g. {max(multiple, round(224 / multiple) * multiple)}")


@dataclass(frozen=True)
class Inferred:
    """What a checkpoint says about its model: class count and input size (None where it says nothing)."""

    num_classes: int | None
    img_size: int | None


def checkpoint_overrides(tuning: FineTuning, state_dict: Mapping[str, torch.Tensor],
                         config: Mapping[str, Any]) -> Inferred:
    head = state_dict.get(tuning.head_key)
    classes = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else None
    size = None
    stem = state_dict.get(tuning.stem_embedding) if tuning.stem_embedding else None
    if isinstance(stem, torch.Tensor) and stem.ndim == 3:
        layout = tuning.layout(tuning.stem_embedding or "", config)
        prefix = layout.prefix if layout else 0
        grid = _square_side(stem.shape[1] - prefix)
        if grid is None:
            raise CheckpointError(f"{tuning.stem_embedding} holds {stem.shape[1] - prefix} patch positions, not a "
                                  "square grid: the checkpoint is not of this family at any square input size")
        size = grid * tuning.token_pixels(config)
    return Inferred(classes, size)


def resample_position_embeddings(state_dict: dict[str, torch.Tensor], model: nn.Module, tuning: FineTuning,
                                 config: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint with every position embedding resized to `model`'s; a note per resized tensor."""
    target = model.state_dict()
    out, notes = dict(state_dict), []
    for key, tensor in state_dict.items():
        want = target.get(key)
        if want is None or tuple(tensor.shape) == tuple(want.shape):
            continue
        layout = tuning.layout(key, config)
        if layout is None or tensor.ndim != 3 or tensor.shape[-1] != want.shape[-1]:
            continue  # not an embedding: the strict load names it
        if layout.kind == "grid":
            out[key] = resample_grid(tensor, want.shape[1] - layout.prefix, layout.prefix)
        else:
            out[key] = resample_sequence(tensor, want.shape[1])
        how = "bicubic on its 2-D grid" if layout.kind == "grid" else "linearly along its token sequence"
        notes.append(f"{key} resampled from {tensor.shape[1]} to {want.shape[1]} positions, {how}")
    return out, notes


def resample_grid(embedding: torch.Tensor, positions: int, prefix: int = 0) -> torch.Tensor:
    """(1, prefix + n*n, D) -> (1, prefix + m*m, D): bicubic over the grid (antialiased), prefix kept."""
    side_in, side_out = _square_side(embedding.shape[1] - prefix), _square_side(positions)
    if side_in is None or side_out is None:
        raise CheckpointError(f"a position embedding of {embedding.shape[1] - prefix} positions cannot be resampled "
                              f"to {positions}: both must be square grids")
    head, grid = embedding[:, :prefix], embedding[:, prefix:]
    dim = grid.shape[-1]
    image = grid.float().reshape(1, side_in, side_in, dim).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(side_out, side_out), mode="bicubic", align_corners=False,
                          antialias=side_out < side_in)
    grid = image.permute(0, 2, 3, 1).reshape(1, side_out * side_out, dim).to(embedding.dtype)
    return torch.cat([head, grid], dim=1)


def resample_sequence(embedding: torch.Tensor, positions: int) -> torch.Tensor:
    """(1, n, D) -> (1, m, D): linear interpolation along the sequence (align_corners=False)."""
    line = embedding.float().transpose(1, 2)
    line = F.interpolate(line, size=positions, mode="linear", align_corners=False)
    return line.transpose(1, 2).to(embedding.dtype)


def _square_side(count: int) -> int | None:
    side = math.isqrt(max(count, 0))
    return side if side * side == count and side > 0 else None


def grid_or_none(pattern: str, prefix: int = 0) -> Callable[[str, Mapping[str, Any]], EmbedLayout | None]:
    """A layout function: keys matching `pattern` are grids with `prefix` leading token entries."""
    compiled = re.compile(pattern)
    return lambda key, config: EmbedLayout("grid", prefix) if compiled.fullmatch(key) else None
