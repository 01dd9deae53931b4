"""Registry of named model variants (timm-style): one `ModelInfo` per name, built lazily.

Each family module registers its variants here when imported; the lookups that need every family
(`models.get_model_info`, `resolve_name`, `list_models`) live in the package, above the families, so
that this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

if TYPE_CHECKING:  # the registry stays importable without torch: the CLI imports `models` for its errors
    from torch import nn

    from .finetune import FineTuning

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
    resize: str = "shorter"  # or "squash": both sides to size/crop_pct (see models.card.Preprocessing)
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
    # The shipped labelled set a reference was trained for (`deploy.data.datasets.SHIPPED`, e.g. "digits"):
    # its held-out images measure real accuracy, so low-precision engines are gated on it.
    reference_dataset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # How a fine-tuned checkpoint of this family differs (classes, input size) and how to adapt it.
    fine_tuning: FineTuning | None = None

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


def registered() -> tuple[dict[str, ModelInfo], dict[str, str]]:
    """The variants registered so far (name -> info) and the aliases (alias -> name)."""
    return _REGISTRY, _ALIASES
