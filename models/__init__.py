"""The model zoo: faithful re-implementations of HVT, CvT, ViT-ResNAS and DeiT, and any model a user deploys.

Takes a variant name (`create_model`), or a `ModelRequest` (a variant with its fine-tuning overrides and
checkpoint, a Hugging Face folder, a factory or an `nn.Module`); hands on an `nn.Module` in eval mode and,
through `load_model`, a `LoadedModel` whose `ModelCard` describes it (input, preprocessing, classes, labels,
counts, provenance) for every later stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .card import LoadedModel, ModelCard, ModelRequest, Preprocessing
from .errors import CheckpointError, ModelError, UnknownModelError
from .load import load_model
from .registry import ModelInfo
from .zoo import create_model, default_weights_path, get_model_info, list_models, resolve_name, weights_of

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo, load_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "LoadedModel",
    "ModelCard",
    "ModelError",
    "ModelInfo",
    "ModelRequest",
    "Preprocessing",
    "UnknownModelError",
    "create_model",
    "default_weights_path",
    "get_model_info",
    "weights_of",
    "list_models",
    "load_checkpoint",
    "load_model",
    "resolve_name",
]


def __getattr__(name: str) -> Any:
    # The checkpoint loader needs torch; import it on first use so that `import models` stays light.
    if name in ("CheckpointInfo", "load_checkpoint"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
