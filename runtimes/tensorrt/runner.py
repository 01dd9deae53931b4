"""The TensorRT runner: a deserialized engine, its device buffers and stream, and its per-layer profile.

Device buffers are allocated once, at the profile's max shapes, with cuda-python's runtime API;
`synchronize()` waits on the runner's stream (timing with CUDA events is the benchmark harness's job).
`profile` runs a second execution context with an `IProfiler` (`layer_times`); the timed context never has
one. The engine inspector (engines are built DETAILED) names each layer's ONNX nodes (`[ONNX Layer: name]`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base import EngineLoadError, InputMismatchError, Runner, RuntimeAdapterError, TensorSpec
from ..profiling import NodeTime, ProfileRequest, RuntimeProfile, median_per_node
from . import cuda
from .cuda import NO_CUDA_PYTHON_REASON, cuda_check


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine_path: Path, sidecar: Mapping[str, Any], device: int = 0):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.sidecar = dict(sidecar)
        self.device = device
        self.profile = {name: [tuple(s) for s in shapes]
                        for name, shapes in self.sidecar["key"]["profile"].items()}
        self.input_specs = [TensorSpec(s["name"], tuple(s["shape"]), s.get("dtype", "float32"))
                            for s in self.sidecar["inputs"]]
        self.output_names = list(self.sidecar["outputs"])
        self._cudart: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, int] = {}
        self._dtypes: dict[str, np.dtype] = {}

    def _activate(self) -> None:
        import tensorrt as trt

        self._cudart = cudart = cuda.import_cudart()
        if cudart is None:
            raise RuntimeAdapterError(f"tensorrt: {NO_CUDA_PYTHON_REASON}")
        cuda_check(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        dla = self.sidecar["key"].get("dla")
        if dla:
            runtime.DLA_core = dla["core"]
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineLoadError(f"TensorRT cannot deserialize {self.engine_path} (corrupt or built by "
                                  "another TensorRT version)")
        self._context = self._engine.create_execution_context()
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._allocate(trt)

    def _allocate(self, trt) -> None:
        """Device buffers sized for the profile's max shapes, bound to the context once."""
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        for name in names:
            self._dtypes[name] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._context.set_input_shape(name, self.profile[name][2])
        for name in names:
            shape = tuple(self._context.get_tensor_shape(name))
            size = max(1, int(np.prod(shape)) * self._dtypes[name].itemsize)
            self._buffers[name] = cuda_check(self._cudart.cudaMalloc(size), "cudaMalloc")
            self._context.set_tensor_address(name, self._buffers[name])

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        staged = []  # host arrays must outlive the async copies
        for spec in self.input_specs:
            array = np.ascontiguousarray(feed[spec.name], dtype=self._dtypes[spec.name])
            self._check_in_profile(spec.name, array.shape)
            self._context.set_input_shape(spec.name, array.shape)
            cuda_check(cudart.cudaMemcpyAsync(self._buffers[spec.name], array.ctypes.data, array.nbytes,
                                              h2d, self._stream), "cudaMemcpyAsync")
            staged.append(array)
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeAdapterError("tensorrt: execute_async_v3 failed (see the TensorRT log)")
        outputs = {name: self._fetch(name) for name in self.output_names}
        self.synchronize()
        return outputs

    def _fetch(self, name: str) -> np.ndarray:
        host = np.empty(tuple(self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
        d2h = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(self._cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name], host.nbytes, d2h,
                                                self._stream), "cudaMemcpyAsync")
        return host

    def _check_in_profile(self, name: str, shape: tuple[int, ...]) -> None:
        low, _, high = self.profile[name]
        inside = len(shape) == len(low) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True))
        if not inside:
            raise InputMismatchError(f"tensorrt: input {name!r} shape {shape} is outside the engine's "
                                     f"profile {tuple(low)}..{tuple(high)}; rebuild with a wider batch list")

    def profiling_unavailable(self) -> str | None:
        return None

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """The request's runs through a second execution context carrying an IProfiler, on this runner's buffers."""
        import tensorrt as trt

        profiler = layer_times(trt)
        context = self._engine.create_execution_context()
        context.profiler = profiler
        for name, pointer in self._buffers.items():
            context.set_tensor_address(name, pointer)
        timed, self._context, walls, runs = self._context, context, [], []
        try:
            for i in range(request.warmup + request.runs):
                start = time.perf_counter()
                self._infer(request.feed(i))  # synchronises: the run's layer times are reported
                walls.append((time.perf_counter() - start) * 1e3)
                runs.append(dict(profiler.totals))
                profiler.totals.clear()
        finally:
            self._context = timed  # the timed context never carries the profiler
        layers = _inspected_layers(trt, self._engine)
        order = [node.name for node in request.source]
        nodes = [NodeTime(name, layers.get(name, {}).get("LayerType", "layer"), ms,
                          layer_sources(name, layers.get(name, {}).get("Metadata", ""), order))
                 for name, ms in median_per_node(runs[request.warmup:]).items()]
        return RuntimeProfile(self.name, nodes, request.runs, float(np.median(walls[request.warmup:])))

    def synchronize(self) -> None:
        """Wait for work queued on this runner's stream (benchmarks time around it with CUDA events)."""
        if self._stream is not None:
            cuda_check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _deactivate(self) -> None:
        if self._cudart is not None:
            for pointer in self._buffers.values():
                self._cudart.cudaFree(pointer)
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
        self._buffers.clear()
        self._context = self._engine = self._stream = None


# ---------------------------------------------------------------- per-layer profile

def layer_times(trt):
    """An `IProfiler` summing each layer's reported time (ms) over the runs (a factory: tensorrt loads lazily)."""

    class LayerTimes(trt.IProfiler):  # type: ignore[name-defined]  # the module is passed in, not imported
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.totals: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.totals[layer_name] = self.totals.get(layer_name, 0.0) + ms

    return LayerTimes()


def _inspected_layers(trt, engine) -> dict[str, dict[str, Any]]:
    """Layer name -> the inspector's record (LayerType, Metadata), where the engine was built DETAILED."""
    try:
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # an engine built without detailed verbosity lists names only
        return {}
    return {layer["Name"]: layer for layer in info.get("Layers", []) if isinstance(layer, dict) and "Name" in layer}


_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^|\]]+?)\s*(?:\||\])")
_FOREIGN_RANGE = re.compile(r"ForeignNode\[(.+?)\.\.\.(.+?)\]")


def layer_sources(layer_name: str, metadata: str, onnx_order: Sequence[str]) -> tuple[str, ...]:
    """The ONNX nodes a TensorRT layer runs: from its metadata (`[ONNX Layer: a]\\x1f[ONNX Layer: b]`), else from
    its name (`a + b`, or Myelin's `{ForeignNode[a...b]}`: every node from a to b in graph order)."""
    named = tuple(dict.fromkeys(_ONNX_LAYER.findall(metadata or "")))
    if named:
        return named
    position = {name: i for i, name in enumerate(onnx_order)}
    span = _FOREIGN_RANGE.search(layer_name)
    if span and span.group(1) in position and span.group(2) in position:
        return tuple(onnx_order[position[span.group(1)]: position[span.group(2)] + 1])
    return tuple(part.strip() for part in layer_name.split(" + ") if part.strip() in position)
