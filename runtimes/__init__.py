"""Runtime adapters behind one interface; each runtime's library is imported only when used.

Takes what the export stage hands on (a `ModelSource`: the rewritten ONNX file or the PyTorch module, with
`BuildOptions` and the adapter's typed `RuntimeOptions`); hands on engine files in an artifact folder
(`Backend.build`) and a `Runner` that infers on named numpy arrays (`Backend.load`), and profiles per node
through its runtime's own profiler in a separate engine (`Runner.profile_layers`, `profiling`). `doctor` says
which runtimes this machine has.
"""

from __future__ import annotations

import importlib

from .base import Availability, Backend, BuildOptions, BuildResult, ModelSource, Runner, TensorSpec
from .errors import EngineLoadError, InputMismatchError, RuntimeAdapterError, RuntimeUnavailableError
from .options import RuntimeOptions
from .profiling import NodeTime, ProfileRequest, ProfilingUnavailableError, RuntimeProfile, SourceNode

# target name -> "module:Class". Adding a runtime is one line here plus its module.
BACKENDS: dict[str, str] = {
    "torch": "runtimes.torch_backend:TorchBackend",
    "onnxruntime": "runtimes.ort_backend:OrtBackend",
    "openvino": "runtimes.openvino_backend:OpenVINOBackend",
    "tensorrt": "runtimes.tensorrt:TensorRTBackend",
    "coreml": "runtimes.coreml_backend:CoreMLBackend",
    "executorch": "runtimes.executorch_backend:ExecuTorchBackend",
}

__all__ = [
    "BACKENDS",
    "Availability",
    "Backend",
    "BuildOptions",
    "BuildResult",
    "EngineLoadError",
    "InputMismatchError",
    "ModelSource",
    "NodeTime",
    "ProfileRequest",
    "ProfilingUnavailableError",
    "Runner",
    "RuntimeAdapterError",
    "RuntimeOptions",
    "RuntimeProfile",
    "RuntimeUnavailableError",
    "SourceNode",
    "TensorSpec",
    "get_backend",
    "target_names",
]


def target_names() -> list[str]:
    return list(BACKENDS)


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(name, BACKENDS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RuntimeAdapterError(f"unknown target {name!r}{hint} (targets: {', '.join(BACKENDS)})")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
