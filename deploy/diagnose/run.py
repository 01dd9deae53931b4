"""`python -m deploy debug-precision MODEL --target T --precision P`: build both graphs, compare, report.

The low-precision graph is what the export stage makes for (T, P): the target's passes, then its
precision pass (`fp16-convert`, or `int8-qdq` calibrated as export calibrates). The fp32 graph is the same
passes without the precision pass, so the two differ only in precision and their tensors pair up by name.
Inputs are the model's held-out labelled images where it has them (or `--dataset`), else seeded noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from models import ModelCard, ModelRequest, load_model
from models.fuse import folded

from ..data.datasets import load_dataset
from ..data.images import seeded_batch
from ..errors import DeployError
from ..export import onnx_export
from ..export.calibration import calibration_feeds
from ..export.request import ExportRequest
from ..export.targets import get_target, resolve_passes
from ..passes import run_passes
from ..passes.quantize import Calibration
from .precision import JUMP_DB, PrecisionReport, compare_graphs


@dataclass(frozen=True)
class DebugRequest:
    model: ModelRequest | str  # a zoo name is short for ModelRequest(model=name)
    target: str = "onnxruntime"
    precision: str = "int8"
    dataset: str | None = None  # default: the model's shipped labelled set, else seeded noise
    samples: int = 16
    calib_method: str = "minmax"
    calib_dir: Path | None = None
    seed: int = 0
    jump_db: float = JUMP_DB


@dataclass(frozen=True)
class DebugGraphs:
    fp32: onnx.ModelProto
    low: onnx.ModelProto
    feeds: list[dict[str, np.ndarray]]
    inputs: str  # what the feeds are, for the report


def build_graphs(request: DebugRequest) -> DebugGraphs:
    """The fp32 and low-precision graphs the export stage would make, and the inputs to compare them on."""
    spec = get_target(request.target)
    appended = list(spec.precision_passes.get(request.precision, ()))
    if spec.opset is None or not appended:
        raise DeployError(f"debug-precision compares ONNX graphs; {spec.name} {request.precision} is not made in the "
                          "ONNX graph (" + ("the target converts from PyTorch" if spec.opset is None else
                                            "the runtime converts precision itself") + "): try --target onnxruntime")
    model_request = (request.model if isinstance(request.model, ModelRequest)
                     else ModelRequest(model=request.model, seed=request.seed))
    loaded = load_model(model_request)
    card = loaded.card
    export_request = ExportRequest(model_request, spec.name, request.precision, calib_dir=request.calib_dir,
                                   calib_method=request.calib_method, seed=request.seed)
    module = folded(loaded.module)
    clean = onnx_export.clean_up(onnx_export.export_onnx(module, card.input_size, spec.opset))
    names = [n for n in resolve_passes(spec, "default", request.precision) if n not in appended]
    feeds = calibration_feeds(export_request, card, request.precision)
    calibration = Calibration(feeds, request.calib_method) if feeds else None  # type: ignore[arg-type]
    fp32, _ = run_passes(clean, names)
    low, _ = run_passes(clean, [*names, *appended], calibration)
    inputs, what = _inputs(request, card)
    return DebugGraphs(fp32, low, inputs, what)


def _inputs(request: DebugRequest, card: ModelCard) -> tuple[list[dict[str, np.ndarray]], str]:
    spec = request.dataset or card.reference_dataset
    if spec:
        labelled = load_dataset(spec, card.preprocessing, request.samples, num_classes=card.num_classes)
        return [{onnx_export.INPUT_NAME: image[None]} for image in labelled.images], f"{len(labelled)} {spec} images"
    images = seeded_batch(card.input_size, request.samples, request.seed + 7)
    return [{onnx_export.INPUT_NAME: image[None]} for image in images], f"{request.samples} seeded noise inputs"


def debug_precision(request: DebugRequest) -> tuple[PrecisionReport, str]:
    """The per-layer report, and what it was measured on."""
    if request.samples < 1:
        raise DeployError(f"--samples must be at least 1, not {request.samples}")
    graphs = build_graphs(request)
    return compare_graphs(graphs.fp32, graphs.low, graphs.feeds, request.jump_db), graphs.inputs
