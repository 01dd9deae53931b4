"""Registry of named model variants (timm-style): one `ModelInfo` per name, built lazily."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

if TYPE_CHECKING:  # the registry stays importable without torch: the CLI imports `models` for its errors
    from torch import nn

StateDictFilter = Callable[[dict[str, Any], "nn.Module"], dict[str, Any]]


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a variant without building it.

    `params_m` and `macs_g` are this implementation's counts (parameters of the inference model;
    multiply-accumulates at `input_size`, batch 1, counted with `FlopCounterMode`); the tests hold
    them to the live model and to the reference numbers. `published_*` are the paper/README figures.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    config: dict[str, Any]
    params_m: float
    macs_g: float
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    published_top1: float | None = None
    published_source: str = ""
    published_macs_g: float | None = None
    published_params_m: float | None = None
    checkpoint_filter: StateDictFilter | None = None
    # Container keys tried in order when a checkpoint is a training dict rather than a state dict.
    checkpoint_keys: tuple[str, ...] = ("model", "state_dict")
    aliases: tuple[str, ...] = ()
    notes: str = ""
    # A checkpoint shipped with the package (relative to `models/`), loaded when no weights are given.
    default_weights: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> nn.Module:
        return self.builder(**{**self.config, **overrides})


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    for key in (info.name, *info.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} registered twice")
    _REGISTRY[info.name] = info
    for alias in info.aliases:
        _ALIASES[alias] = info.name
    return info


def _ensure_families_loaded() -> None:
    # Importing the family modules registers their variants.
    from . import families  # noqa: F401


def resolve_name(name: str) -> str:
    _ensure_families_loaded()
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    choices = sorted([*_REGISTRY, *_ALIASES])
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} (run `python -m deploy list` for the zoo)"
    )


def get_model_info(name: str) -> ModelInfo:
    return _REGISTRY[resolve_name(name)]


def list_models(family: str | None = None) -> list[ModelInfo]:
    _ensure_families_loaded()
    infos = list(_REGISTRY.values())
    if family:
        infos = [i for i in infos if i.family == family]
    return infos


