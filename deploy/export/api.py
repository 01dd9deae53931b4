"""The Python API: `from deploy import export, bench, predict` (this module: `export`, and what they share).

Each takes what the command line takes, as Python values, and returns the typed results the stages hand on:

    import deploy
    result = deploy.export(my_module, "onnxruntime", input_size=(3, 224, 224), name="mine")   # ExportResult
    document = deploy.bench(my_module, ["onnxruntime", "openvino"], input_size=(3, 224, 224))  # ResultsDocument
    predictions = deploy.predict(result.artifact_dir, ["cat.jpg"])                            # list[Prediction]

A model is a zoo name, a Hugging Face folder's path, an `nn.Module` (a Hugging Face classifier included), a
`models.ModelRequest` or a `models.LoadedModel`; the keyword arguments that describe a model (`name`,
`weights`, `num_classes`, `img_size`, `input_size`, `preprocessing`, `labels`, `use_ema`, `factory`, `seed`)
go to its `ModelRequest`, the others to the stage's request (`ExportRequest`, `BenchSettings`).
`deploy.export`, `deploy.bench` and `deploy.predict` are the stages' packages (and module), made callable
(`deploy.callable.callable_package`); `deploy.bench.api` and `deploy.predict` hold the other two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import LoadedModel, ModelRequest

from ..errors import DeployError

if TYPE_CHECKING:
    from .request import ExportResult

MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelRequest)) - {"model", "module"}


def model_request(model: Any, **described: Any) -> ModelRequest | LoadedModel:
    """A model given in any of the API's forms, with the keywords that describe it."""
    if isinstance(model, LoadedModel):
        if described:
            raise DeployError(f"{', '.join(sorted(described))}: a LoadedModel is built already; describe it when "
                              "you load it")
        return model
    if isinstance(model, ModelRequest):
        return dataclasses.replace(model, **described)
    if isinstance(model, (str, Path)):
        return ModelRequest(model=str(model), **described)
    import torch

    if isinstance(model, torch.nn.Module):
        return ModelRequest(module=model, **described)
    raise DeployError(f"a model is a zoo name, a Hugging Face folder, an nn.Module or a ModelRequest, not a "
                      f"{type(model).__name__}")


def split_model_keywords(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    described = {k: v for k, v in kwargs.items() if k in MODEL_KEYS}
    if "labels" in described and isinstance(described["labels"], list):
        described["labels"] = tuple(described["labels"])
    if "input_size" in described and described["input_size"] is not None:
        described["input_size"] = tuple(described["input_size"])
    return described, {k: v for k, v in kwargs.items() if k not in MODEL_KEYS}


def typed_options(target: str, options: Mapping[str, object] | None) -> Any:
    if not options:
        return None
    from runtimes import get_backend

    return get_backend(target).parse_options({k: str(v) if not isinstance(v, str) else v for k, v in options.items()})


def export_model(model: Any, target: str = "onnxruntime", /, **kwargs: Any) -> ExportResult:
    """Export `model` for `target`: `ExportRequest`'s fields as keywords (`precision`, `out`, `batch`, `passes`,
    `gate`, ...), `options` as a dict of the runtime adapter's settings, and the model's own keywords."""
    from .request import ExportRequest
    from .stage import export

    described, rest = split_model_keywords(kwargs)
    rest["runtime_options"] = typed_options(target, rest.pop("options", None))
    for key in ("out", "calib_dir"):
        if rest.get(key) is not None:
            rest[key] = Path(rest[key])
    if "batch" in rest:
        rest["batch"] = tuple(rest["batch"]) if isinstance(rest["batch"], Iterable) else (int(rest["batch"]),)
    request = construct(ExportRequest, model=model_request(model, **described), target=target, **rest)
    return export(request)


def construct(kind: type, **values: Any) -> Any:
    """A request dataclass from keywords; an unknown keyword is one error naming the known ones."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DeployError(f"unknown argument(s) {', '.join(unknown)}; {kind.__name__} takes "
                          f"{', '.join(sorted(known))} and a model takes {', '.join(sorted(MODEL_KEYS))}")
    return kind(**values)
