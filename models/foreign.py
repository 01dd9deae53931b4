"""A user's own model: an `nn.Module` handed to the Python API, or a factory named on the command line.

A factory is `package.module:function` (imported) or `path/to/file.py:function` (loaded from the file); it
is called with no arguments, or with `num_classes=` where that was given (refused if it takes none), and with
`img_size=` where that was given and it takes one (the size is the model's input either way). The module must
map a `(batch, C, H, W)` float tensor to `(batch, classes)` logits. A Hugging Face `...ForImageClassification`
module, whose forward takes `pixel_values=` and returns an output object, is wrapped to return its logits.

What the module takes and how images become that (`Preprocessing`) come from, in order: what the request
gives, a timm-style `pretrained_cfg` / `default_cfg` on the module, a Hugging Face `config.image_size`; else
ImageNet's eval transform is assumed at the given size, and the card says so in a note, since feeding an
engine another transform than its training's is the commonest deployment bug.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .card import ModelCard, Preprocessing
from .errors import ModelError

if TYPE_CHECKING:
    from .card import LoadedModel, ModelRequest

ASSUMED = ("preprocessing not given: ImageNet mean/std, bicubic resize of the shorter side to size/0.875 and a "
           "centre crop assumed; give the model's own transform (Python: preprocessing=Preprocessing(...))")


class HubLogits(nn.Module):
    """A Hugging Face image classifier as a module returning its logits (the engine's one output)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def load_foreign(request: ModelRequest) -> LoadedModel:
    from .card import LoadedModel

    module = request.module if request.module is not None else _call_factory(request)
    if not isinstance(module, nn.Module):
        what = f"factory {request.factory}" if request.factory else "the model given"
        raise ModelError(f"{what} returned a {type(module).__name__}, not a torch.nn.Module")
    hub_config = getattr(module, "config", None) if _is_hub_classifier(module) else None
    if hub_config is not None:
        module = HubLogits(module)
    preprocessing, notes = _preprocessing(request, module, hub_config)
    module.eval()
    classes = _output_classes(module, preprocessing.input_size)
    labels = _hub_labels(hub_config, classes)
    from .complexity import count_params

    macs_g, macs_note = _macs(module, preprocessing.input_size)
    card = ModelCard(
        name=request.display_name, family="custom", source="module" if request.module is not None else "factory",
        preprocessing=preprocessing, num_classes=classes, params=count_params(module), macs_g=macs_g,
        config={"factory": request.factory} if request.factory else {"class": _qualname(module)},
        labels=labels, labels_source="config id2label" if labels else None,
        notes=tuple(filter(None, [*notes, macs_note])))
    return LoadedModel(module, card)


def _is_hub_classifier(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return config is not None and hasattr(config, "id2label") and "pixel_values" in inspect.signature(
        module.forward).parameters


def _qualname(module: nn.Module) -> str:
    inner = module.model if isinstance(module, HubLogits) else module
    return f"{type(inner).__module__}.{type(inner).__qualname__}"


def _call_factory(request: ModelRequest) -> Any:
    spec = str(request.factory)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ModelError(f"--model-factory {spec!r}: write package.module:function or path/to/file.py:function")
    function = getattr(_import(where, spec), name, None)
    if function is None or not callable(function):
        raise ModelError(f"--model-factory {spec}: {where} has no function {name}")
    kwargs = {key: value for key, value in (("num_classes", request.num_classes), ("img_size", request.img_size))
              if value is not None}
    try:
        parameters: Mapping[str, inspect.Parameter] | None = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = None  # a builtin or C function: call it as asked
    if parameters is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        if "img_size" not in parameters:
            kwargs.pop("img_size", None)  # the input size alone, then
        refused = [key for key in kwargs if key not in parameters]
    else:
        refused = []
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        raise ModelError(f"--model-factory {spec}: {name}() takes no {', '.join(refused)}, so {flags} cannot be "
                         "passed to it; drop the flag or add the parameter")
    try:
        return function(**kwargs)
    except Exception as exc:  # the user's code: any error is theirs to see, on one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"--model-factory {spec} raised {type(exc).__name__}: {detail}") from None


def _import(where: str, spec: str) -> Any:
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise ModelError(f"--model-factory {spec}: no file {path}")
        module_name = f"vit_deploy_factory_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelError(f"--model-factory {spec}: {path} is not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ModelError(f"--model-factory {spec}: importing {path} raised {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None
        return module
    try:
        return importlib.import_module(where)
    except Exception as exc:
        raise ModelError(f"--model-factory {spec}: cannot import {where} ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _preprocessing(request: ModelRequest, module: nn.Module, hub_config: Any) -> tuple[Preprocessing, list[str]]:
    if request.preprocessing is not None:
        return request.preprocessing, []
    size = request.input_size
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size") and size is None and request.img_size is None:
        found = Preprocessing(tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
                              tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                              tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                              str(cfg.get("interpolation", "bicubic")), float(cfg.get("crop_pct", 0.875)))
        return found, ["preprocessing from the module's pretrained_cfg"]
    if size is None and request.img_size is not None:
        size = (3, request.img_size, request.img_size)
    if size is None and hub_config is not None and getattr(hub_config, "image_size", None):
        side = int(hub_config.image_size)
        size = (int(getattr(hub_config, "num_channels", 3)), side, side)
    if size is None:
        raise ModelError("the model's input size is not known: give --img-size S (Python: input_size=(3, S, S))")
    return Preprocessing(size), [ASSUMED]


def _output_classes(module: nn.Module, input_size: tuple[int, int, int]) -> int:
    """The number of logits per image, from one forward pass at batch 1."""
    x = torch.zeros(1, *input_size)
    try:
        with torch.inference_mode():
            out = module(x)
    except Exception as exc:
        raise ModelError(f"the model fails on a (1, {', '.join(map(str, input_size))}) input: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model returns {shape}; an image classifier returns (batch, classes) logits")
    return int(out.shape[1])


def _hub_labels(hub_config: Any, classes: int) -> tuple[str, ...] | None:
    id2label = getattr(hub_config, "id2label", None) if hub_config is not None else None
    if not id2label or len(id2label) != classes:
        return None
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))


def _macs(module: nn.Module, input_size: tuple[int, int, int]) -> tuple[float, str | None]:
    """MACs on the meta device, as the zoo counts them; a note where the module cannot be counted there."""
    from .complexity import count_macs

    try:
        return count_macs(module, input_size) / 1e9, None
    except Exception as exc:  # a module with ops the meta device lacks: its count is unknown, not wrong
        return 0.0, f"MACs not counted: the module does not run on the meta device ({type(exc).__name__})"
