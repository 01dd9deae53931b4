"""Looking variants up in the registry (by name or alias, with close names for a typo) and building them."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UnknownModelError
from .registry import ModelInfo, registered

if TYPE_CHECKING:
    from torch import nn

    from .checkpoint import CheckpointInfo


def _ensure_families_loaded() -> None:
    # Importing the family modules registers their variants (they import torch: only on first lookup).
    from . import families  # noqa: F401


def resolve_name(name: str) -> str:
    """The registry name for a variant name or alias; an error with close names for a typo."""
    _ensure_families_loaded()
    variants, aliases = registered()
    key = name.strip().lower().replace("-", "_")
    if key in variants:
        return key
    if key in aliases:
        return aliases[key]
    close = difflib.get_close_matches(key, sorted([*variants, *aliases]), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (run `python -m deploy list` for the zoo)")


def get_model_info(name: str) -> ModelInfo:
    return registered()[0][resolve_name(name)]


def list_models(family: str | None = None) -> list[ModelInfo]:
    _ensure_families_loaded()
    infos = list(registered()[0].values())
    return [i for i in infos if i.family == family] if family else infos


def create_model(
    name: str,
    weights: str | Path | None = None,
    *,
    use_ema: bool | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a zoo model in eval mode; load `weights` (a local official checkpoint) strictly if given.

    A variant that ships its own checkpoint (`ModelInfo.default_weights`, e.g. `hvt_digits`) loads it
    when `weights` is None and the config is not overridden.

    The returned module carries `model.model_info` (the registry entry) and `model.weights_info`
    (a `CheckpointInfo`, or None when randomly initialised).
    """
    info = get_model_info(name)
    model = info.build(**overrides)
    checkpoint = None
    if weights is None and info.default_weights and not overrides:
        weights = default_weights_path(info)
    if weights is not None:
        from .checkpoint import load_checkpoint

        checkpoint = load_checkpoint(
            model,
            weights,
            container_keys=info.checkpoint_keys,
            state_dict_filter=info.checkpoint_filter,
            use_ema=use_ema,
        )
    # Attributes of the module, so every later stage can say what it was built from.
    setattr(model, "model_info", info)  # noqa: B010
    setattr(model, "weights_info", checkpoint)  # noqa: B010
    return model.eval()


def weights_of(model: nn.Module) -> CheckpointInfo | None:
    """The checkpoint `create_model` loaded into `model`, or None (random init)."""
    return getattr(model, "weights_info", None)


def default_weights_path(info: ModelInfo) -> Path | None:
    """The checkpoint shipped for `info` (e.g. `hvt_digits`), or None for a zoo model without one."""
    return Path(__file__).parent / info.default_weights if info.default_weights else None
