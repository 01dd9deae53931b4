"""int8 calibration samples: images from `--calib-dir` in the model's preprocessing, else seeded noise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.images import load_images, seeded_batch
from . import onnx_export

if TYPE_CHECKING:
    from models.registry import ModelInfo

    from .request import ExportRequest


def calibration_feeds(request: ExportRequest, info: ModelInfo, precision: str) -> list[dict[str, np.ndarray]] | None:
    """One feed per sample for an int8 build, None for the other precisions."""
    if precision != "int8":
        return None
    if request.calib_dir:
        images = load_images(request.calib_dir, info, request.calib_samples)
    else:
        images = seeded_batch(info.input_size, request.calib_samples, request.seed + 1000)
    return [{onnx_export.INPUT_NAME: image[None]} for image in images]


def calibration_note(request: ExportRequest, count: int) -> dict[str, Any]:
    if request.calib_dir:
        return {"source": str(request.calib_dir), "samples": count}
    return {"source": "random", "samples": count,
            "warning": "calibrated on random inputs (no --calib-dir): int8 ranges are not representative"}
