"""The `environment` a results file records: platform, processor, library and runtime versions, device."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

import runtimes
from runtimes.doctor import probe

from .detect import cpu_model


def environment(threads: int | None, device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import onnx
    import torch

    env = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": cpu_model(),
        "cpu_count": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "numpy": np.__version__,
    }
    for name in runtimes.target_names():
        _, status = probe(name)
        env[f"runtime:{name}"] = status.version if status.available else None
    if device is not None:
        env["device"] = dict(device)
    return env
