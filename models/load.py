"""Any model a user deploys, built into one `LoadedModel`: a zoo variant, a fine-tuned checkpoint of one (another
class count or input size, inferred from the checkpoint), a Hugging Face folder, a factory, or an `nn.Module`.

`ModelRequest` (in `card`) says what was asked for; `load_model` builds the module in eval mode (randomly initialised
under the request's seed when no weights are given) and describes it in a `ModelCard`. Checkpoints are read
by format (`.pth`/`.pt`/`.bin` through `torch.load(weights_only=True)`, `.safetensors` through the
safetensors library), Hugging Face folders by `hub`, modules and factories by `foreign`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .card import LoadedModel, ModelCard, ModelRequest, Preprocessing, is_hub_folder, read_labels, zoo_labels
from .errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .registry import ModelInfo


def load_model(request: ModelRequest) -> LoadedModel:
    """Build what `request` names; a `ModelError` (one line) for anything the user can fix."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(request.seed)
        if request.module is not None or request.factory is not None:
            from .foreign import load_foreign

            loaded = load_foreign(request)
        elif (request.model is not None and is_hub_folder(request.model)) or (
                request.weights is not None and is_hub_folder(str(request.weights))):
            from .hub import load_hub_folder

            loaded = load_hub_folder(request)
        else:
            loaded = _load_zoo(request)
    loaded.module.eval()
    if request.labels is not None:
        labels = (tuple(request.labels) if isinstance(request.labels, (tuple, list))
                  else read_labels(Path(request.labels), loaded.card.num_classes))
        if len(labels) != loaded.card.num_classes:
            raise ModelError(f"{len(labels)} labels given, the model has {loaded.card.num_classes} classes")
        loaded = replace(loaded, card=replace(loaded.card, labels=labels, labels_source="given"))
    return replace(loaded, request=request)


def _load_zoo(request: ModelRequest) -> LoadedModel:
    from .zoo import default_weights_path, get_model_info

    if request.model is None:
        raise ModelError("no model given: a zoo name, a Hugging Face folder, a factory or a module")
    info = get_model_info(request.model)
    state_dict, weights = None, None
    path = request.weights
    if path is None and info.default_weights and request.num_classes is None and request.img_size is None:
        path = default_weights_path(info)
    if path is not None:
        from .checkpoint import read_weights

        state_dict, weights = read_weights(Path(path), info.checkpoint_keys, request.use_ema)
        if info.checkpoint_filter is not None:
            state_dict = info.checkpoint_filter(state_dict, None)  # type: ignore[arg-type]
    overrides, inferred = _overrides(info, request, state_dict)
    model = info.build(**overrides)
    notes: list[str] = []
    if state_dict is not None:
        from .checkpoint import check_finite, load_state_dict_strict
        from .finetune import resample_position_embeddings

        if info.fine_tuning is not None:
            state_dict, notes = resample_position_embeddings(state_dict, model, info.fine_tuning,
                                                             {**info.config, **overrides})
        check_finite(state_dict, path or "")
        load_state_dict_strict(model, state_dict, f"{info.name}{_described(overrides)}")
    return LoadedModel(model, zoo_card(info, model, overrides, inferred, notes, request), weights)


def _overrides(info: ModelInfo, request: ModelRequest,
               state_dict: Mapping[str, torch.Tensor] | None) -> tuple[dict[str, Any], list[str]]:
    """The config changes against the variant: given, else read from the checkpoint; what was read, said."""
    tuning = info.fine_tuning
    config = dict(info.config)
    classes, size, inferred = request.num_classes, request.img_size, []
    if state_dict is not None and tuning is not None:
        from .finetune import checkpoint_overrides

        found = checkpoint_overrides(tuning, state_dict, config)
        if classes is None and found.num_classes is not None:
            classes = found.num_classes
            if classes != _classes(info):
                inferred.append(f"num_classes {classes} from {tuning.head_key} "
                                f"{tuple(state_dict[tuning.head_key].shape)}")
        if size is None and found.img_size is not None:
            size = found.img_size
            if size != info.input_size[-1]:
                stem = state_dict[tuning.stem_embedding or ""]
                inferred.append(f"img_size {size} from {tuning.stem_embedding} {tuple(stem.shape)}")
    overrides: dict[str, Any] = {}
    if classes is not None and classes != _classes(info):
        overrides["num_classes"] = classes
    if size is not None and size != info.input_size[-1]:
        if tuning is None:
            raise ModelError(f"{info.name} cannot change its input size")
        tuning.check_size(size, config, info.name)
        overrides["img_size"] = size
    return overrides, inferred


def _classes(info: ModelInfo) -> int:
    if "num_classes" in info.config:
        return int(info.config["num_classes"])
    network_def = info.config.get("network_def")
    return int(network_def[-1][2]) if network_def else 1000


def _described(overrides: Mapping[str, Any]) -> str:
    return "".join(f", {key} {value}" for key, value in overrides.items())


def zoo_card(info: ModelInfo, model: nn.Module, overrides: Mapping[str, Any], inferred: list[str],
             notes: list[str], request: ModelRequest) -> ModelCard:
    """A zoo variant's card: the registry's facts, recounted where the config changed."""
    from .complexity import count_macs, count_params

    changed = bool(overrides)
    preprocessing = Preprocessing.of(info, overrides.get("img_size"))
    num_classes = int(overrides.get("num_classes", _classes(info)))
    reference = info.reference_dataset if not changed else None  # its held-out images fit this model only
    labels, labels_source = zoo_labels(num_classes, reference)
    macs_g = count_macs(model, preprocessing.input_size) / 1e9 if changed else info.macs_g
    return ModelCard(
        name=request.display_name, family=info.family, source="checkpoint" if request.weights is not None else "zoo",
        preprocessing=preprocessing, num_classes=num_classes,
        params=count_params(model), macs_g=macs_g, base=info.name, overrides=dict(overrides),
        config={**info.config, **overrides}, labels=labels, labels_source=labels_source,
        published_top1=None if changed else info.published_top1,
        reference_dataset=reference, inferred=tuple(inferred), notes=tuple(notes))
