"""CUDA through cuda-python's runtime API: the GPUs this machine has, and one checked call at a time.

cuda-python moved its runtime module from `cuda.cudart` to `cuda.bindings.runtime` in 12.6; `import_cudart`
takes either (tests/data/cuda_api holds both layouts' surfaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..base import RuntimeAdapterError, first_line

NO_CUDA_PYTHON_REASON = "cuda-python is not installed (pip install -e .[tensorrt]); the runner needs it"


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"
    index: int = 0

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower() + f"-sm{self.compute_capability}"


def import_cudart():
    """cuda-python's runtime module (new layout first, then the pre-12.6 one), or None."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            return None
    return cudart


def cuda_check(result, what: str = "CUDA call"):
    """Unpack a cuda-python (err, *values) tuple, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code: Any = getattr(err, "value", err)
    if int(code) != 0:  # cudaError_t.cudaSuccess is 0
        # By name: str() of the bindings' IntEnum error codes is only the number on Python >= 3.11.
        raise RuntimeAdapterError(f"{what} failed: {getattr(err, 'name', err)} ({int(code)})")
    return values[0] if len(values) == 1 else tuple(values) or None


def cuda_devices(cudart) -> tuple[list[DeviceInfo], str]:
    """(devices, reason if none)."""
    if cudart is None:
        return [], NO_CUDA_PYTHON_REASON
    try:
        count = cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except RuntimeAdapterError as exc:
        return [], f"no CUDA GPU is usable here ({exc})"
    except RuntimeError as exc:  # cuda-python 12.2 raises when it cannot load the driver (tests/data/cuda_api)
        return [], f"no CUDA driver is usable here ({first_line(exc)})"
    if not count:
        return [], "no CUDA GPU is visible here"
    return [device_info(cudart, i) for i in range(count)], ""


def device_info(cudart, index: int) -> DeviceInfo:
    props = cuda_check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(name.rstrip("\x00").strip(), f"{props.major}.{props.minor}", index)


def device_index(device: str | None) -> int:
    """"cuda:1", "1", "gpu1" or None (0) -> CUDA device index."""
    if device is None:
        return 0
    match = re.fullmatch(r"(?:cuda|gpu)?:?(\d+)", str(device).strip().lower())
    if not match:
        raise RuntimeAdapterError(f"TensorRT device {device!r} is not a CUDA device index such as 'cuda:0'")
    return int(match.group(1))
