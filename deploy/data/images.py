"""Inputs for parity and calibration: seeded tensors, or images preprocessed as each model expects.

Preprocessing is the model's eval transform (`models.Preprocessing`: resize the shorter side, or both sides, to
size/crop_pct, centre crop, normalise) done with Pillow and numpy, so no torchvision is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeployError

if TYPE_CHECKING:
    from PIL.Image import Image

    from models import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL.Image.Resampling values


def seeded_batch(input_size: tuple[int, ...], batch: int, seed: int) -> np.ndarray:
    """Standard-normal images: what a normalised photo looks like to the first layer, on average."""
    return np.random.default_rng(seed).standard_normal((batch, *input_size)).astype(np.float32)


def preprocess(image: Image, input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],  # noqa: PLR0913
               interpolation: str = "bicubic", crop_pct: float = 0.875, resize: str = "shorter") -> np.ndarray:
    """A PIL image -> a (C, H, W) float32 array, the model's eval transform.

    resize "shorter": the shorter side to size/crop_pct, aspect kept (timm); "squash": both sides to
    size/crop_pct (Hugging Face's ViT and DeiT processors); then a centre crop to the input size.
    """
    channels, height, width = input_size
    image = image.convert("RGB" if channels == 3 else "L")
    scale = int(round(height / crop_pct))
    w, h = image.size
    if resize == "squash":
        new_w, new_h = int(round(width / crop_pct)), scale
    elif w <= h:
        new_w, new_h = scale, max(1, int(round(h * scale / w)))
    else:
        new_w, new_h = max(1, int(round(w * scale / h))), scale
    image = image.resize((new_w, new_h), resample=_RESAMPLE.get(interpolation, 3))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / np.float32(255.0)
    array = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess_for(preprocessing: Preprocessing) -> Callable[[Any], np.ndarray]:
    """The eval transform a model's `Preprocessing` describes."""
    p = preprocessing
    return lambda image: preprocess(image, p.input_size, p.mean, p.std, p.interpolation, p.crop_pct, p.resize)


def images_in(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted; may be empty."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def no_images_error(folder: Path) -> DeployError:
    return DeployError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")


def image_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DeployError(f"image folder {folder} does not exist")
    files = images_in(folder)
    if not files:
        raise no_images_error(folder)
    return files


def read_images(paths: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """The images at `paths`, preprocessed for a model, stacked; one error names an unreadable file."""
    from PIL import Image

    transform = preprocess_for(preprocessing)
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(transform(image))
        except OSError as exc:
            raise DeployError(f"cannot read image {path}: {exc}") from None
    return np.stack(arrays)


def load_images(folder: Path, preprocessing: Preprocessing, limit: int) -> np.ndarray:
    """Up to `limit` images under `folder`, preprocessed for a model."""
    return read_images(image_files(folder)[:limit], preprocessing)
