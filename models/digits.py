"""The `*_digits` references: one small model per family trained on scikit-learn's 8x8 handwritten digits.

They exist so that accuracy parity can be shown on real labelled data offline, in every family: the
weights ship in `models/weights/<name>.pth` (trained by `scripts/train_digits.py NAME`), the held-out
images in `deploy/data/digits_test.npz` and the training images (int8 calibration) in
`deploy/data/digits_train.npz`. Each is its family's real module code with a small config for the
32x32 upsampled digits, so it exercises the same export path and rewrites as the ImageNet variants:

- `hvt_digits`: `models.hvt.HVT`, patch 4, 64 dims, 4 blocks, token pooling after blocks 0 and 2
  (64 -> 31 -> 15 tokens);
- `deit_digits`: `models.deit.DeiT`, patch 4, 64 dims, 4 blocks, cls token (1 + 64 tokens);
- `cvt_digits`: `models.cvt.CvT`, three stages of convolutional token embedding (5x5 then 3x3, stride 2:
  16x16 -> 8x8 -> 4x4 maps at 32/48/64 dims) with `dw_bn` q/k/v projections (BatchNorm, folded at export),
  cls token in the last stage;
- `resnas_digits`: `models.resnas.ViTResNAS`, the conv stem (patch 4: 8x8 tokens) and two residual spatial
  reductions (8x8 -> 4x4 -> 2x2 tokens at 32/48/64 dims).
"""

from __future__ import annotations

from typing import Any

from . import cvt as cvt_family
from . import deit as deit_family
from . import hvt as hvt_family
from . import resnas as resnas_family
from .cvt import cvt
from .deit import deit
from .hvt import hvt
from .registry import ModelInfo, register_model
from .resnas import HEAD, SPATIAL_REDUCTION, STEM, TRANSFORMER, NetworkDef, vit_resnas

_FINE_TUNING = {"hvt": hvt_family.FINE_TUNING, "deit": deit_family.FINE_TUNING, "cvt": cvt_family.FINE_TUNING,
                "resnas": resnas_family.FINE_TUNING}

# Digits are mostly background: ink is ~31% of the mean intensity after bicubic upsampling (training split).
DIGITS_MEAN = (0.31, 0.31, 0.31)
DIGITS_STD = (0.35, 0.35, 0.35)
DIGITS_SIZE = 32
_SOURCE = "scripts/train_digits.py: held-out split of sklearn digits (450 images)"


def _block(dim: int, heads: int, head_dim: int, mlp_hidden: int) -> tuple[Any, ...]:
    return (TRANSFORMER, (dim, heads, head_dim), (dim, mlp_hidden), 1)


RESNAS_DIGITS: NetworkDef = (
    (STEM, 32),
    _block(32, 1, 32, 64), _block(32, 1, 32, 64),
    (SPATIAL_REDUCTION, 32, 48),
    _block(48, 2, 24, 96), _block(48, 2, 24, 96),
    (SPATIAL_REDUCTION, 48, 64),
    _block(64, 2, 32, 128), _block(64, 2, 32, 128),
    (HEAD, 64, 10),
)


def _register(name: str, family: str, builder: Any, config: dict[str, Any], *, params_m: float, macs_g: float,
              top1: float, notes: str) -> None:
    register_model(ModelInfo(
        name=name, family=family, builder=builder, config={**config, "num_classes": 10},
        params_m=params_m, macs_g=macs_g,
        input_size=(3, DIGITS_SIZE, DIGITS_SIZE), mean=DIGITS_MEAN, std=DIGITS_STD, interpolation="bicubic",
        crop_pct=1.0,
        # Held-out top-1 of the shipped weights (tests/test_digits.py re-measures it).
        published_top1=top1, published_source=_SOURCE,
        default_weights=f"weights/{name}.pth", reference_dataset="digits", notes=notes,
        fine_tuning=_FINE_TUNING[family],
    ))


_register("hvt_digits", "hvt", hvt,
          {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0,
           "pool_block_width": 2},
          params_m=0.145, macs_g=0.005617, top1=99.78,
          notes="tiny HVT on sklearn 8x8 digits (upsampled to 32x32); shipped weights")
_register("deit_digits", "deit", deit,
          {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0},
          params_m=0.142, macs_g=0.010880, top1=98.67,
          notes="tiny DeiT (cls token) on sklearn 8x8 digits (upsampled to 32x32); shipped weights")
_register("cvt_digits", "cvt", cvt,
          {"img_size": 32, "embed_dims": (32, 48, 64), "depths": (1, 1, 2), "num_heads": (1, 1, 2),
           "patch_sizes": (5, 3, 3), "patch_strides": (2, 2, 2), "patch_paddings": (2, 1, 1), "mlp_ratio": 2.0},
          params_m=0.146, macs_g=0.006870, top1=99.11,
          notes="tiny CvT (conv embedding, dw_bn projections) on sklearn 8x8 digits; shipped weights")
_register("resnas_digits", "resnas", vit_resnas,
          {"network_def": RESNAS_DIGITS, "img_size": 32, "patch_size": 4},
          params_m=0.187, macs_g=0.005976, top1=99.78,
          notes="tiny ViT-ResNAS (conv stem, residual spatial reduction) on sklearn 8x8 digits; shipped weights")
