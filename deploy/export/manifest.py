"""The manifest's head: which model, weights, target, precision and library versions an artifact holds."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from . import artifacts

if TYPE_CHECKING:
    from torch import nn

    from models.registry import ModelInfo

    from .request import ExportRequest


def manifest_head(request: ExportRequest, info: ModelInfo, model: nn.Module, target: str, precision: str,
                  runtime_version: str | None) -> dict[str, Any]:
    from models import weights_of
    from models.complexity import count_params

    weights = weights_of(model)
    return {
        "schema": artifacts.MANIFEST_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": info.name, "family": info.family, "config": info.config,
            "input_size": list(info.input_size), "mean": list(info.mean), "std": list(info.std),
            "interpolation": info.interpolation, "crop_pct": info.crop_pct,
            "params": count_params(model), "macs_g": info.macs_g,
        },
        "weights": (
            {"source": "file", "path": weights.path, "sha256": weights.sha256,
             "container_key": weights.container_key}
            if weights else {"source": "random-init", "seed": request.seed,
                             "note": "no --weights given: outputs are meaningless"}
        ),
        "target": target,
        "precision": precision,
        "versions": versions(target, runtime_version),
    }


def versions(target: str, runtime_version: str | None) -> dict[str, str | None]:
    import onnx
    import onnxscript
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__, "numpy": np.__version__, target: runtime_version,
    }
