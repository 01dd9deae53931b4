"""int8 calibration samples, in the model's preprocessing: `--calib-dir` images, else the training split of
the model's shipped dataset (the digits references), else seeded noise (and the manifest says so)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.datasets import load_dataset
from ..data.images import load_images, seeded_batch
from . import onnx_export

if TYPE_CHECKING:
    from models import ModelCard

    from .request import ExportRequest


def calibration_feeds(request: ExportRequest, card: ModelCard, precision: str) -> list[dict[str, np.ndarray]] | None:
    """One feed per sample for an int8 build, None for the other precisions."""
    if precision != "int8":
        return None
    if request.calib_dir:
        images = load_images(request.calib_dir, card.preprocessing, request.calib_samples)
    elif card.reference_dataset:
        images = load_dataset(card.reference_dataset, card.preprocessing, request.calib_samples, split="train").images
    else:
        images = seeded_batch(card.input_size, request.calib_samples, request.seed + 1000)
    return [{onnx_export.INPUT_NAME: image[None]} for image in images]


def calibration_note(request: ExportRequest, card: ModelCard, count: int, onnx_graph: bool = True) -> dict[str, Any]:
    """The manifest's record of where the int8 ranges came from. `--calib-method` is recorded only for the
    ONNX Q/DQ pass that applies it; an engine built from PyTorch (ExecuTorch's PT2E) calibrates with its own
    quantizer's observers."""
    base: dict[str, Any] = {"samples": count}
    if onnx_graph:
        base["method"] = request.calib_method
    if request.calib_dir:
        return {"source": str(request.calib_dir), **base}
    if card.reference_dataset:
        return {"source": f"{card.reference_dataset} (training split)", **base}
    return {"source": "random", **base,
            "warning": "calibrated on random inputs (no --calib-dir): int8 ranges are not representative"}
