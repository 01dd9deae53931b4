"""Inputs for parity and calibration: seeded tensors, or images preprocessed as each model expects.

Preprocessing is the model's eval transform (`models.Preprocessing`: resize the shorter side, or both sides, to
size/crop_pct, centre crop, normalise) done with Pillow and numpy, so no torchvision is needed.

Every image file is decoded by `decode_image`, the one place that sets Pillow's pixel limit
(`MAX_IMAGE_PIXELS`): an image over it, or a file Pillow cannot decode (empty, truncated, not an image),
is one `ImageError` naming the file. `read_images` refuses a folder with any such file (calibration);
`read_labelled` skips them in a labelled set as long as `MIN_DECODED` of its images decode.
"""

from __future__ import annotations

import logging
import re
import warnings
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
# The most pixels an image may have: 64 Mi, an 8192 x 8192 image (192 MiB decoded as RGB, and as much again
# for the copy preprocessing makes: what a 2-GB board can still hold), far beyond any photo a 224-384 px model
# needs. Pillow's own guard is set to it too: left alone, it only warns up to twice its 89.5 Mpx default and
# then raises an error of its own type (`DecompressionBombError`), which is not an OSError.
MAX_IMAGE_PIXELS = 64 * 2**20
# A labelled set measures accuracy on the images that decode; below this share of its files, it fails.
MIN_DECODED = 0.95
log = logging.getLogger("deploy")


class ImageError(DeployError):
    """One image file that cannot be decoded (corrupt, truncated, empty, over the pixel limit)."""


class DatasetError(DeployError):
    """A labelled set too few of whose images decode to stand for an accuracy figure."""


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


def decode_image(path: Path) -> Image:
    """The image at `path`, decoded (RGB); `ImageError` in one line if it cannot be, or is over the pixel limit."""
    import PIL.Image

    PIL.Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # the one place the limit is set
    bombs = (PIL.Image.DecompressionBombWarning, PIL.Image.DecompressionBombError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)  # over the limit: refused, not noted
            with PIL.Image.open(path) as image:
                return image.convert("RGB")  # decodes it all: a truncated file fails here, not later
    except bombs as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(size.group(1)):,} pixels" if size else "more pixels than the limit"
        raise ImageError(f"image {path} has {pixels}, over the limit of {MAX_IMAGE_PIXELS:,} "
                         f"({MAX_IMAGE_PIXELS // 2**20} Mpx) on any image read here: downscale it") from None
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error...
        raise ImageError(f"cannot read image {path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_images(paths: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """The images at `paths`, preprocessed for a model, stacked; one error names an unreadable file."""
    transform = preprocess_for(preprocessing)
    return np.stack([transform(decode_image(path)) for path in paths])


def read_labelled(paths: list[Path], preprocessing: Preprocessing, folder: Path) -> tuple[np.ndarray, list[int]]:
    """The images of a labelled set that decode, preprocessed, and the indices of those in `paths`.

    A file that does not decode is skipped with a note, unless fewer than `MIN_DECODED` of them decode:
    then the set cannot stand for itself, and it is one `DatasetError` saying how many did.
    """
    transform = preprocess_for(preprocessing)
    arrays, kept, failures = [], [], []
    for index, path in enumerate(paths):
        try:
            arrays.append(transform(decode_image(path)))
        except ImageError as exc:
            failures.append(str(exc))
            continue
        kept.append(index)
    if len(kept) < MIN_DECODED * len(paths):
        raise DatasetError(f"only {len(kept)} of the {len(paths)} images in {folder} decode (at least "
                          f"{MIN_DECODED:.0%} must for an accuracy figure); first: {failures[0]}")
    if failures:
        log.warning("%d of the %d images in %s do not decode and are left out of its accuracy; first: %s",
                    len(failures), len(paths), folder, failures[0])
    return np.stack(arrays), kept


def load_images(folder: Path, preprocessing: Preprocessing, limit: int) -> np.ndarray:
    """Up to `limit` images under `folder`, preprocessed for a model."""
    return read_images(image_files(folder)[:limit], preprocessing)
