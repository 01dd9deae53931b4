"""Labelled image sets, preprocessed for one model: the shipped digits and ImageNet-style folders.

Datasets:
- `digits`: scikit-learn's 8x8 handwritten digits, shipped for the `*_digits` references and preprocessed
  like any image: the 450 held-out images in `deploy/data/digits_test.npz` (split "test", for measuring)
  and the 1,347 training images in `deploy/data/digits_train.npz` (split "train", for int8 calibration);
- a folder ImageNet-style: one subfolder per class. Class indices follow the sorted subfolder names
  (torchvision's `ImageFolder` convention, which is the ImageNet-1k index for its wnid folders), or
  the order of a `classes.txt` beside them (one name a line) when the folder holds only some classes.
  A folder of one class and no `classes.txt` is noted: all its images get label 0.

Images go through the model's own eval transform (`deploy.data.images.preprocess`, Pillow + numpy); files
that do not decode are left out, unless too many do not (`images.read_labelled`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import DeployError
from .images import images_in, no_images_error, preprocess_for, read_labelled

if TYPE_CHECKING:
    from PIL.Image import Image

    from models import Preprocessing

Split = Literal["test", "train"]
SPLITS: tuple[Split, ...] = ("test", "train")

DIGITS_FILE = Path(__file__).parent / "digits_test.npz"
DIGITS_TRAIN_FILE = Path(__file__).parent / "digits_train.npz"
# Shipped sets by name: the held-out file (what `--dataset digits` measures on) ...
SHIPPED = {"digits": DIGITS_FILE}
# ... and the training file of the same set (disjoint from it; calibration draws from here).
SHIPPED_TRAIN = {"digits": DIGITS_TRAIN_FILE}
log = logging.getLogger("deploy")
_NOTED: set[Path] = set()  # one-class folders already noted in this process (each model reads the folder again)


@dataclass
class LabeledSet:
    name: str
    images: np.ndarray  # (N, C, H, W) float32, preprocessed for one model
    labels: np.ndarray  # (N,) int64 class indices
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def digits_image(pixels: np.ndarray) -> Image:
    """One 8x8 uint8 digit (0 = background, 255 = ink) as a greyscale PIL image."""
    from PIL import Image

    return Image.fromarray(np.asarray(pixels, dtype=np.uint8), "L")


def load_digits_set(preprocessing: Preprocessing, path: Path = DIGITS_FILE, limit: int | None = None) -> LabeledSet:
    """Shipped digits (`images` uint8 (N, 8, 8), `labels`; held-out by default), preprocessed for a model."""
    try:
        with np.load(path) as data:
            pixels, labels = data["images"], data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DeployError(f"cannot read the digits set {path}: {exc}") from None
    pixels, labels = pixels[:limit], labels[:limit]
    transform = preprocess_for(preprocessing)
    images = np.stack([transform(digits_image(p)) for p in pixels])
    return LabeledSet("digits", images, labels, [str(i) for i in range(10)], str(path))


def class_folders(folder: Path) -> tuple[list[str], dict[str, int]]:
    """Class names in output order and the index of each subfolder that holds images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DeployError(f"dataset folder {folder} does not exist")
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise DeployError(f"{folder} has no class subfolders (expected FOLDER/<class>/<image>)")
    listing = folder / "classes.txt"
    if listing.is_file():
        classes = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        unknown = sorted(set(subfolders) - set(classes))
        if unknown:
            raise DeployError(f"{listing} does not list the class folder(s) {', '.join(unknown[:5])}")
    else:
        classes = subfolders
        if len(subfolders) == 1 and folder.resolve() not in _NOTED:
            _NOTED.add(folder.resolve())
            log.warning("%s has one class folder (%s) and no classes.txt, so every image gets label 0, the "
                        "model's first class, and top-1 counts only predictions of that class as right; list the "
                        "model's classes in output order in %s (one a line)", folder, subfolders[0], listing)
    index = {name: i for i, name in enumerate(classes)}
    return classes, {name: index[name] for name in subfolders}


def load_image_folder(folder: Path, preprocessing: Preprocessing, limit: int | None = None) -> LabeledSet:
    """Labelled images from class subfolders; with `limit`, a class-balanced subset (round robin)."""
    classes, index = class_folders(folder)
    per_class = [images_in(Path(folder) / name) for name in index]
    picked = _round_robin(list(zip(index.values(), per_class, strict=True)), limit)
    if not picked:
        raise no_images_error(folder)
    images, kept = read_labelled([path for path, _ in picked], preprocessing, Path(folder))
    labels = np.array([picked[i][1] for i in kept], dtype=np.int64)
    return LabeledSet(Path(folder).name, images, labels, classes, str(folder))


def _round_robin(groups: list[tuple[int, list[Path]]], limit: int | None) -> list[tuple[Path, int]]:
    # Taking the first N files would cover only the first classes; interleave them instead.
    picked: list[tuple[Path, int]] = []
    depth = max((len(files) for _, files in groups), default=0)
    for i in range(depth):
        for label, files in groups:
            if i < len(files):
                picked.append((files[i], label))
    return picked[:limit] if limit else picked


def load_dataset(spec: str, preprocessing: Preprocessing, limit: int | None = None, split: Split = "test",
                 num_classes: int | None = None) -> LabeledSet:
    """`digits` (shipped) or a class-subfolder image folder, preprocessed for a model of `num_classes` outputs.

    `split` picks a shipped set's held-out images ("test", to measure on) or its training images
    ("train", to calibrate on: never measure on these, the references were fitted to them). A folder is
    one set and ignores it.
    """
    if split not in SPLITS:
        raise DeployError(f"unknown dataset split {split!r} (expected one of {', '.join(SPLITS)})")
    if spec in SHIPPED:
        dataset = load_digits_set(preprocessing, (SHIPPED if split == "test" else SHIPPED_TRAIN)[spec], limit)
    else:
        dataset = load_image_folder(Path(spec), preprocessing, limit)
    if num_classes is not None and len(dataset.classes) > num_classes:
        raise DeployError(f"dataset {spec!r} has {len(dataset.classes)} classes but the model predicts "
                          f"{num_classes}: it is not a dataset for this model")
    return dataset
