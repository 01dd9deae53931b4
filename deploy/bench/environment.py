"""The `environment` a results file records: platform, processor, library and runtime versions, device."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

import runtimes
from runtimes.doctor import probe

from .. import __version__
from .detect import cpu_model
from .results import Environment


def environment(threads: int | None, device: Mapping[str, Any] | None = None) -> Environment:
    import onnx
    import torch

    versions = {}
    for name in runtimes.target_names():
        _, status = probe(name)
        versions[name] = status.version if status.available else None
    return Environment(platform=platform.platform(), machine=platform.machine(), processor=cpu_model(),
                       cpu_count=os.cpu_count(), threads=threads or torch.get_num_threads(),
                       python=platform.python_version(), torch=torch.__version__, onnx=onnx.__version__,
                       numpy=np.__version__, vit_deploy=__version__, runtimes=versions,
                       device=dict(device) if device is not None else None)
