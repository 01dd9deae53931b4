"""What a deployable model is asked to be (`ModelRequest`), and what it is once built (`LoadedModel`, described
by its `ModelCard`): the typed data every later stage reads.

A zoo variant, a fine-tuned checkpoint of one, a Hugging Face folder, a user's factory or `nn.Module` all
become one `ModelCard`: its name, where it came from (the base variant and its overrides), the input it
takes and how an image becomes that input (`Preprocessing`), its classes and their labels, its counts,
and what was inferred rather than given. The manifest records it, so an artifact says how to feed it
and how to read its output without this package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ModelError
from .registry import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torch import nn

    from .checkpoint import CheckpointInfo
    from .registry import ModelInfo

Source = Literal["zoo", "checkpoint", "huggingface", "factory", "module"]
# shorter: resize the shorter side to size / crop_pct (aspect kept), then centre-crop (timm, the papers' eval);
# squash: resize both sides to size / crop_pct (aspect not kept), then centre-crop (Hugging Face's ViT and DeiT).
ResizeMode = Literal["shorter", "squash"]
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
LABELS_FOLDER = Path(__file__).parent / "labels"


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize, centre crop, scale to [0, 1], normalise, CHW."""

    input_size: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    resize: ResizeMode = "shorter"

    def __post_init__(self) -> None:
        channels = self.input_size[0]
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ModelError(f"input size {self.input_size} is not (channels, height, width)")
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise ModelError(f"mean {self.mean} and std {self.std} need one value per channel ({channels}), "
                             "std above 0")
        if self.interpolation not in INTERPOLATIONS:
            raise ModelError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_pct <= 1:
            raise ModelError(f"crop_pct {self.crop_pct} is outside (0, 1]")

    @classmethod
    def of(cls, info: ModelInfo, img_size: int | None = None) -> Preprocessing:
        """A zoo variant's eval transform, at `img_size` if it was fine-tuned at another size."""
        channels, height, width = info.input_size
        if img_size is not None:
            height = width = img_size
        return cls((channels, height, width), tuple(info.mean), tuple(info.std), info.interpolation, info.crop_pct,
                   info.resize)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelCard:
    """A built model's description: identity, provenance, input, output, counts."""

    name: str  # the artifact folder's and the results' name for it
    family: str  # hvt, deit, cvt, resnas; or "custom" for a module the zoo does not know
    source: Source
    preprocessing: Preprocessing
    num_classes: int
    params: int
    macs_g: float  # at `preprocessing.input_size`, batch 1 (FlopCounterMode FLOPs / 2)
    base: str | None = None  # the zoo variant it was built from
    overrides: Mapping[str, Any] = field(default_factory=dict)  # against the base variant's config
    config: Mapping[str, Any] = field(default_factory=dict)  # what the builder was given
    labels: tuple[str, ...] | None = None  # one per class, in output order
    labels_source: str | None = None
    published_top1: float | None = None  # the paper's figure: only for an unchanged zoo variant
    reference_dataset: str | None = None  # a shipped labelled set this model was trained for (the digits)
    inferred: tuple[str, ...] = ()  # what was read from the checkpoint rather than given, one line each
    notes: tuple[str, ...] = ()  # choices made on the way (an activation, a resampled embedding)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.preprocessing.input_size


def zoo_labels(num_classes: int, reference_dataset: str | None = None) -> tuple[tuple[str, ...] | None, str | None]:
    """The class names the zoo ships for a head of `num_classes`: ImageNet-1k's 1000, the digits' 10."""
    if reference_dataset == "digits" and num_classes == 10:
        return tuple(str(d) for d in range(10)), "digits"
    if num_classes == 1000:
        return imagenet_labels(), "ImageNet-1k class names (WordNet lemmas, index order)"
    return None, None


def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k's class names in index order (the sorted WordNet ids), the first lemma of each."""
    lines = (LABELS_FOLDER / "imagenet1k.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in lines if line.strip())


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    """A labels file: one class name a line, in output order (blank lines skipped); its count must match."""
    try:
        names = tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(names) != num_classes:
        raise ModelError(f"labels file {path} names {len(names)} classes, the model has {num_classes}: "
                         "give one name a line, in the model's output order")
    return names


@dataclass(frozen=True)
class ModelRequest:
    """Which model to build: `model` is a zoo variant (or alias) or a Hugging Face folder's path, unless a
    `factory` or a `module` is given. `name` is what its artifacts and results are called (default: the
    variant's name, the folder's, the factory function's, or the module class's in snake case)."""

    model: str | None = None
    name: str | None = None
    weights: str | Path | None = None  # a checkpoint file, or a Hugging Face model folder
    use_ema: bool | None = None
    num_classes: int | None = None  # None: the checkpoint's, else the variant's
    img_size: int | None = None  # None: the checkpoint's, else the variant's
    factory: str | None = None  # "package.module:function" or "path/to/file.py:function"
    module: Any = None  # an nn.Module (the Python API)
    input_size: tuple[int, int, int] | None = None  # a factory's or module's input (C, H, W)
    preprocessing: Preprocessing | None = None  # a factory's or module's image transform
    labels: tuple[str, ...] | Path | None = None  # class names, or a file of them (one a line)
    seed: int = 0  # of a random initialisation

    def __post_init__(self) -> None:
        for flag, value in (("--num-classes", self.num_classes), ("--img-size", self.img_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ModelError(f"{flag} must be a positive integer, not {value!r}")
        given = [what for what, value in (("a factory", self.factory), ("a module", self.module)) if value is not None]
        if len(given) > 1:
            raise ModelError("give a factory or a module, not both")

    @property
    def display_name(self) -> str:
        """The name artifacts and results take, known before anything is built."""
        if self.name is not None:
            return safe_name(self.name)
        if self.module is not None or self.factory is not None:
            return safe_name(_default_foreign_name(self))
        if self.model is None:
            raise ModelError("no model given: a zoo name, a Hugging Face folder, a factory or a module")
        if is_hub_folder(self.model):
            return safe_name(Path(self.model).resolve().name)
        from .zoo import resolve_name

        return resolve_name(self.model)

    @property
    def custom(self) -> bool:
        """Anything but a zoo variant as registered (its shipped weights included)."""
        return any(v is not None for v in (self.weights, self.num_classes, self.img_size, self.factory, self.module))


@dataclass(frozen=True)
class LoadedModel:
    """The module (eval mode, BatchNorm not folded), its description, and what was asked for."""

    module: nn.Module
    card: ModelCard
    weights: CheckpointInfo | None = None  # None: random initialisation (seeded)
    request: ModelRequest = field(default_factory=lambda: ModelRequest())

    @property
    def seed(self) -> int:
        return self.request.seed


def is_hub_folder(path: str) -> bool:
    """A Hugging Face model folder: a directory with a `config.json`."""
    folder = Path(path)
    return folder.is_dir() and (folder / "config.json").is_file()


def safe_name(text: str) -> str:
    """A name usable as an artifact folder: letters, digits, '_', '-', '.' (others become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    if not cleaned:
        raise ModelError(f"{text!r} makes no usable model name: pass --name")
    return cleaned


def _default_foreign_name(request: ModelRequest) -> str:
    if request.module is not None:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(request.module).__name__).lower()
    spec = str(request.factory)
    return spec.rpartition(":")[2] or Path(spec).stem
