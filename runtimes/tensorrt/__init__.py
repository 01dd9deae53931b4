"""The TensorRT adapter: ONNX -> serialized engine (`model.engine` + `model.engine.json` sidecar) -> runner.

Written against the `tensorrt` Python API (10.x and 11.x) and `cuda-python` for device memory. Neither installs
here (TensorRT wheels come from NVIDIA's index; NVIDIA's containers and JetPack ship them), so everything that
does not touch a GPU is plain Python and tested without them; the rest is checked against the real API surfaces
of each release (tests/test_tensorrt_conformance.py). Split as Polygraphy splits the job:

- `plan`: the pure decisions (route, optimisation profile, DLA, TF32) and `TensorRTOptions`;
- `cache`: the engine cache key, the sidecar every engine carries, the engine and timing-cache files;
- `cuda`: cuda-python's runtime API, the GPUs here;
- `build`: the builder, network, config and timing cache (needs tensorrt);
- `runner`: the engine's execution context, buffers and per-layer profile (needs tensorrt and a GPU);
- `backend`: `TensorRTBackend`, which ties them together.
"""

from __future__ import annotations

from .backend import UNAVAILABLE_REASON, TensorRTBackend
from .plan import TensorRTOptions
from .runner import TensorRTRunner

__all__ = ["UNAVAILABLE_REASON", "TensorRTBackend", "TensorRTOptions", "TensorRTRunner"]
