"""The artifact's `manifest.json`, typed: which model, weights, target, precision, engine files and parity.

Written by the export stage and validated on every read (`parse_manifest`): valid JSON of the wrong
shape, a missing key or another schema version is one clear error. `engine.sha256` holds every engine
file's hash and `onnx.node_map_sha256` the node map's, checked before the engine is loaded
(`artifacts.verify_files`); `manifest.sha256` beside the manifest covers the manifest itself.

`status` is "ok" (parity passed here), "failed" (parity failed: kept as `<target>-<precision>.failed/`,
never loaded) or "unverified" (built, but the runtime cannot run on this machine, so parity could not be
checked: Core ML on Linux, TensorRT without a GPU; `parity.skipped` says why).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter, ValidationError

from ..errors import DeployError
from ..passes.record import PassRecord

if TYPE_CHECKING:
    from torch import nn

    from models.registry import ModelInfo

    from .request import ExportRequest

MANIFEST_SCHEMA = 2
Status = Literal["ok", "failed", "unverified"]


def _absent(value: object) -> bool:
    return value is None


OMITTED_IF_NONE = Field(default=None, exclude_if=_absent)


@dataclass
class ModelRecord:
    name: str
    family: str
    config: dict[str, Any]
    input_size: list[int]
    mean: list[float]
    std: list[float]
    interpolation: str
    crop_pct: float
    params: int
    macs_g: float
    batchnorm_folded: int = 0


@dataclass
class WeightsRecord:
    source: Literal["file", "random-init"]
    path: Annotated[str | None, OMITTED_IF_NONE] = None
    sha256: Annotated[str | None, OMITTED_IF_NONE] = None
    container_key: str | None = None
    seed: Annotated[int | None, OMITTED_IF_NONE] = None
    note: Annotated[str | None, OMITTED_IF_NONE] = None


@dataclass
class OnnxRecord:
    exporter: str
    opset: int
    sha256: str
    passes: list[PassRecord]
    op_histogram: dict[str, int]
    auto: Annotated[dict[str, Any] | None, OMITTED_IF_NONE] = None  # --passes auto's candidates and choice
    # The graph's nodes with their module scopes, in the artifact folder, for per-layer profiles.
    node_map: Annotated[str | None, OMITTED_IF_NONE] = None
    node_map_sha256: Annotated[str | None, OMITTED_IF_NONE] = None  # checked before a profile reads it


@dataclass
class EngineRecord:
    files: list[str]  # relative to the artifact folder; the first is the engine to load
    details: dict[str, Any]
    batches: list[int] | Literal["dynamic"]
    sha256: dict[str, str] = field(default_factory=dict)  # file (or package folder) -> sha256


@dataclass
class TensorRecord:
    name: str
    shape: list[int | str | None]
    dtype: str = "float32"


@dataclass
class RealDataRecord:
    """Top-1 agreement with PyTorch fp32 on the model's held-out labelled images (the low-precision gate)."""

    dataset: str
    images: int
    agreement: float
    min_agreement: float
    top1: float
    reference_top1: float
    passed: bool


@dataclass
class ParityRecord:
    """The parity gate: tolerance, inputs, and the worst figures over every checked batch (or why skipped)."""

    tolerance: dict[str, float | None]
    inputs: str
    passed: bool | None = None
    skipped: Annotated[str | None, OMITTED_IF_NONE] = None
    max_abs: Annotated[float | None, OMITTED_IF_NONE] = None
    max_abs_rel: Annotated[float | None, OMITTED_IF_NONE] = None
    max_rel: Annotated[float | None, OMITTED_IF_NONE] = None
    cosine: Annotated[float | None, OMITTED_IF_NONE] = None
    top1_agreement: Annotated[float | None, OMITTED_IF_NONE] = None
    reason: Annotated[str | None, OMITTED_IF_NONE] = None
    batches: Annotated[list[dict[str, Any]] | None, OMITTED_IF_NONE] = None
    gate: Annotated[str | None, OMITTED_IF_NONE] = None  # what decided `passed`
    note: Annotated[str | None, OMITTED_IF_NONE] = None  # e.g. why random-init int8 is recorded, not gated
    real_data: Annotated[RealDataRecord | None, OMITTED_IF_NONE] = None


@dataclass
class Manifest:
    schema: int
    created: str
    model: ModelRecord
    weights: WeightsRecord
    target: str
    precision: str
    versions: dict[str, str | None]
    engine: EngineRecord
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    parity: ParityRecord
    status: Status
    onnx: Annotated[OnnxRecord | None, OMITTED_IF_NONE] = None
    calibration: Annotated[dict[str, Any] | None, OMITTED_IF_NONE] = None

    def to_json(self) -> dict[str, Any]:
        return _MANIFEST.dump_python(self, mode="python")


_MANIFEST = TypeAdapter(Manifest)


def parse_manifest(data: Any, source: str) -> Manifest:
    """A manifest from its parsed JSON; one DeployError naming the file and the first problem."""
    if not isinstance(data, dict):
        raise DeployError(f"{source} is not an artifact manifest (a JSON object is expected); re-run export")
    if data.get("schema") != MANIFEST_SCHEMA:
        raise DeployError(f"{source} has manifest schema {data.get('schema')!r}, this version reads "
                          f"{MANIFEST_SCHEMA}; re-run export")
    try:
        return _MANIFEST.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        what = "missing" if error["type"] == "missing" else error["msg"].lower()
        raise DeployError(f"{source} is not a valid manifest ({where}: {what}); re-run export") from None


def model_record(info: ModelInfo, model: nn.Module, batchnorm_folded: int) -> ModelRecord:
    from models.complexity import count_params

    return ModelRecord(name=info.name, family=info.family, config=dict(info.config), input_size=list(info.input_size),
                       mean=list(info.mean), std=list(info.std), interpolation=info.interpolation,
                       crop_pct=info.crop_pct, params=count_params(model), macs_g=info.macs_g,
                       batchnorm_folded=batchnorm_folded)


def weights_record(model: nn.Module, request: ExportRequest) -> WeightsRecord:
    from models import weights_of

    weights = weights_of(model)
    if weights is None:
        return WeightsRecord(source="random-init", seed=request.seed,
                             note="no --weights given: outputs are meaningless")
    return WeightsRecord(source="file", path=str(weights.path), sha256=weights.sha256,
                         container_key=weights.container_key)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions(target: str, runtime_version: str | None) -> dict[str, str | None]:
    import onnx
    import onnxscript
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__, "numpy": np.__version__, target: runtime_version,
    }
