"""`hvt_digits`: a tiny HVT trained on scikit-learn's bundled 8x8 handwritten digits.

It exists so that accuracy parity can be shown on real labelled data offline: the weights ship in
`models/weights/hvt_digits.pth` (trained by `scripts/train_digits.py`) and the held-out images in
`deploy/data/digits_test.npz`. It is a plain `models.hvt.HVT` (patch 4 on 32x32 upsampled digits,
64 dims, 4 blocks, token pooling after blocks 0 and 2: 64 -> 31 -> 15 tokens), so it exercises
the same export path and pooling rewrite as the ImageNet variants.
"""

from __future__ import annotations

from .hvt import hvt
from .registry import ModelInfo, register_model

# Digits are mostly background: ink is ~31% of the mean intensity after bicubic upsampling (training split).
DIGITS_MEAN = (0.31, 0.31, 0.31)
DIGITS_STD = (0.35, 0.35, 0.35)

register_model(ModelInfo(
    name="hvt_digits", family="hvt", builder=hvt,
    config={"img_size": 32, "patch_size": 4, "num_classes": 10, "embed_dim": 64, "depth": 4,
            "num_heads": 2, "mlp_ratio": 2.0, "pool_block_width": 2},
    params_m=0.145, macs_g=0.005617,
    input_size=(3, 32, 32), mean=DIGITS_MEAN, std=DIGITS_STD, interpolation="bicubic", crop_pct=1.0,
    # Held-out top-1 of the shipped weights (tests/test_digits.py re-measures it).
    published_top1=99.78,
    published_source="scripts/train_digits.py: held-out split of sklearn digits (450 images)",
    default_weights="weights/hvt_digits.pth",
    reference_dataset="digits",
    notes="tiny HVT on sklearn 8x8 digits (upsampled to 32x32); shipped weights",
))
