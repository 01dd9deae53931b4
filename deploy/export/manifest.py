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
    from models import LoadedModel

MANIFEST_SCHEMA = 2
Status = Literal["ok", "failed", "unverified"]


def _absent(value: object) -> bool:
    return value is None


OMITTED_IF_NONE = Field(default=None, exclude_if=_absent)


@dataclass
class ModelRecord:
    """The model, and everything needed to feed it and read its output without this package.

    Preprocessing: resize (`resize` "shorter": the shorter side to input/crop_pct keeping the aspect,
    "squash": both sides to input/crop_pct), centre-crop to the input size, scale to [0, 1], subtract `mean`,
    divide by `std`, channels first. Output: one logit per class, in `labels` order.
    """

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
    resize: str = "shorter"
    num_classes: Annotated[int | None, OMITTED_IF_NONE] = None
    source: Annotated[str | None, OMITTED_IF_NONE] = None  # zoo, checkpoint, huggingface, factory, module
    base: Annotated[str | None, OMITTED_IF_NONE] = None  # the zoo variant it was built from
    overrides: Annotated[dict[str, Any] | None, OMITTED_IF_NONE] = None  # against the base variant's config
    labels: Annotated[list[str] | None, OMITTED_IF_NONE] = None
    labels_source: Annotated[str | None, OMITTED_IF_NONE] = None
    inferred: Annotated[list[str] | None, OMITTED_IF_NONE] = None  # read from the checkpoint, not given
    notes: Annotated[list[str] | None, OMITTED_IF_NONE] = None


@dataclass
class WeightsRecord:
    source: Literal["file", "random-init"]
    path: Annotated[str | None, OMITTED_IF_NONE] = None
    sha256: Annotated[str | None, OMITTED_IF_NONE] = None
    container_key: str | None = None
    seed: Annotated[int | None, OMITTED_IF_NONE] = None
    note: Annotated[str | None, OMITTED_IF_NONE] = None


@dataclass
class CandidateParity:
    max_abs_rel: float
    cosine: float
    passed: bool


@dataclass
class CandidateLatency:
    """A candidate's latency over every interleaved round (ms), its score (best round's median) and the medians."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    score: float
    round_medians: list[float]


@dataclass
class CandidateRecord:
    """One pass set `--passes auto` tried: built, gated on parity, timed (or why not)."""

    label: str  # as --passes spells it: none, default, +a,-b
    passes: list[str]
    status: Literal["ok", "same-graph", "error", "failed-parity"] = "ok"
    changes: Annotated[dict[str, int] | None, OMITTED_IF_NONE] = None  # places each pass changed
    same_as: Annotated[str | None, OMITTED_IF_NONE] = None  # the candidate whose graph this one equals
    error: Annotated[str | None, OMITTED_IF_NONE] = None
    parity: Annotated[CandidateParity | None, OMITTED_IF_NONE] = None
    latency_ms: Annotated[CandidateLatency | None, OMITTED_IF_NONE] = None


@dataclass
class AutotuneRecord:
    """`--passes auto`'s measurement and choice: every candidate, the winner's passes, and why it won."""

    winner: str
    passes: list[str]
    appended: list[str]  # the precision's own passes, after the candidate's
    reason: str
    statistic: str
    settings: dict[str, float]
    seconds: float
    candidates: list[CandidateRecord]


@dataclass
class OnnxRecord:
    exporter: str
    opset: int
    sha256: str
    passes: list[PassRecord]
    op_histogram: dict[str, int]
    auto: Annotated[AutotuneRecord | None, OMITTED_IF_NONE] = None  # --passes auto's candidates and choice
    # The graph's nodes with their module scopes, in the artifact folder, for per-layer profiles.
    node_map: Annotated[str | None, OMITTED_IF_NONE] = None
    node_map_sha256: Annotated[str | None, OMITTED_IF_NONE] = None  # checked before a profile reads it


@dataclass
class EngineRecord:
    files: list[str]  # relative to the artifact folder; the first is the engine to load
    details: dict[str, Any]
    batches: list[int] | Literal["dynamic"]
    sha256: dict[str, str] = field(default_factory=dict)  # file (or package folder) -> sha256
    # The adapter's typed runtime options the engine was built with; `load_artifact` rebuilds them.
    options: dict[str, Any] = field(default_factory=dict)
    can_run_here: Annotated[bool | None, OMITTED_IF_NONE] = None  # False: its runtime runs here, it does not


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
    # The other files a profile reads (the module MAC table), by name, with their sha256.
    files: dict[str, str] = field(default_factory=dict)

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


def model_record(model: LoadedModel, batchnorm_folded: int) -> ModelRecord:
    card, pre = model.card, model.card.preprocessing
    custom = card.source != "zoo" or bool(card.overrides)
    return ModelRecord(
        name=card.name, family=card.family, config=_jsonable(card.config), input_size=list(pre.input_size),
        mean=list(pre.mean), std=list(pre.std), interpolation=pre.interpolation, crop_pct=pre.crop_pct,
        params=card.params, macs_g=card.macs_g, batchnorm_folded=batchnorm_folded, resize=pre.resize,
        num_classes=card.num_classes, source=card.source, base=card.base if custom else None,
        overrides=dict(card.overrides) or None, labels=list(card.labels) if card.labels else None,
        labels_source=card.labels_source, inferred=list(card.inferred) or None, notes=list(card.notes) or None)


def _jsonable(value: Any) -> Any:
    """Tuples as lists, recursively: the config as JSON holds it, so a manifest reads back equal."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def weights_record(model: LoadedModel) -> WeightsRecord:
    weights = model.weights
    if weights is None:
        return WeightsRecord(source="random-init", seed=model.seed, note="no --weights given: outputs are meaningless")
    return WeightsRecord(source="file", path=str(weights.path), sha256=weights.sha256,
                         container_key=weights.container_key)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions(target: str, runtime_version: str | None) -> dict[str, str | None]:
    import onnx
    import onnxscript
    import torch

    from .. import __version__

    return {
        "vit-deploy": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "numpy": np.__version__,
        target: runtime_version,
    }
