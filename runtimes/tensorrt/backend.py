"""The TensorRT backend: ONNX -> serialized engine (`model.engine` + `model.engine.json` sidecar), and back.

`build` plans (`plan`), keys and looks up the engine cache (`cache`), builds on a miss (`build`) and writes the
engine with its sidecar; `load` refuses an engine built for another TensorRT or GPU and hands on a
`TensorRTRunner` (`runner`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import (
    Availability,
    Backend,
    BuildOptions,
    BuildResult,
    ModelSource,
    Runner,
    RuntimeAdapterError,
    TensorSpec,
)
from ..options import options_for
from . import cuda
from .build import build_serialized
from .cache import (
    ENGINE_FILE,
    SIDECAR_FILE,
    default_cache_dir,
    engine_cache_dir,
    engine_cache_key,
    files_sha256,
    lookup_cached_engine,
    read_sidecar,
    timing_cache_path,
    verify_sidecar,
    write_engine,
)
from .cuda import DeviceInfo, cuda_check, device_index
from .plan import TensorRTOptions, inspect_onnx, make_plan, parse_version
from .runner import TensorRTRunner

UNAVAILABLE_REASON = (
    "the tensorrt Python package is not installed (NVIDIA's TensorRT container or JetPack provides it)"
)


class TensorRTBackend(Backend):
    name = "tensorrt"
    pip_extra = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    source_kind = "onnx"
    options_type = TensorRTOptions
    engine_file = ENGINE_FILE

    def availability(self) -> Availability:
        try:
            import tensorrt as trt
        except ImportError:
            return Availability(False, None, UNAVAILABLE_REASON)
        devices, reason = cuda.cuda_devices(cuda.import_cudart())
        if not devices:
            return Availability(False, trt.__version__, reason)
        names = tuple(f"cuda:{d.index} {d.name} (sm {d.compute_capability})" for d in devices)
        return Availability(True, trt.__version__, "", names, can_build=True, can_run=True)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        self.check_precision(options.precision)
        onnx_path = self.onnx_input(source)
        self.require()
        import tensorrt as trt

        plan, key, cache_folder = self._prepare(trt, source, onnx_path, options)
        cached = lookup_cached_engine(cache_folder, key) if cache_folder else None
        if cached is not None:
            engine, pinned = cached[0], cached[1].get("fp32_layers", [])
        else:
            engine, pinned = build_serialized(trt, onnx_path, plan, parse_version(trt.__version__))
            if cache_folder is not None:
                write_engine(cache_folder, engine, key, source, pinned)
        sidecar = write_engine(Path(out_dir), engine, key, source, pinned)
        details = {"route": plan.route.name, "route_reason": plan.route.reason, "key": key,
                   "key_digest": sidecar["key_digest"], "engine_cache": "hit" if cached else "miss",
                   "timing_cache": str(plan.timing_cache), "fp32_layers": pinned,
                   "opt_batch": next(iter(plan.profile.values()))[1][0] if plan.profile else None}
        # A DLA engine's profile is static: parity checks it at the one batch it serves.
        static = (next(iter(plan.profile.values()))[0][0],) if plan.dla and plan.profile else None
        return BuildResult(files=(ENGINE_FILE, SIDECAR_FILE), details=details, batches=static)

    def _prepare(self, trt: Any, source: ModelSource, onnx_path: Path, options: BuildOptions):
        """(plan, cache key, engine-cache folder or None) for a build on the selected GPU."""
        settings = options_for(options.runtime, TensorRTOptions, "tensorrt")
        device = self._device(options)
        graph = inspect_onnx(onnx_path)
        plan = make_plan(parse_version(trt.__version__), options, graph, source.input_specs)
        cache_dir = default_cache_dir(settings)
        plan.timing_cache = (Path(settings.timing_cache) if settings.timing_cache
                             else timing_cache_path(cache_dir, trt.__version__, device))
        key = engine_cache_key(
            tensorrt_version=trt.__version__, device=device,
            model_sha256=files_sha256(onnx_path, graph.external_files), precision=options.precision,
            route=plan.route, builder_flags=plan.builder_flags(), profile=plan.profile, dla=plan.dla,
            workspace_mib=plan.workspace_mib)
        folder = engine_cache_dir(cache_dir, key) if settings.engine_cache else None
        return plan, key, folder

    def _device(self, options: BuildOptions) -> DeviceInfo:
        cudart = cuda.import_cudart()
        index = device_index(options.device)
        devices, reason = cuda.cuda_devices(cudart)
        if index >= len(devices):
            found = reason or f"{len(devices)} found"
            raise RuntimeAdapterError(f"CUDA device {index} is not present ({found})")
        cuda_check(cudart.cudaSetDevice(index), "cudaSetDevice")
        return devices[index]

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        path = Path(artifact_dir) / engine_file
        sidecar = read_sidecar(path)
        self.require()
        import tensorrt as trt

        device = self._device(options)
        here = {"tensorrt_version": trt.__version__, "gpu_name": device.name,
                "compute_capability": device.compute_capability}
        verify_sidecar(sidecar, files_sha256(path), here)
        return TensorRTRunner(path, sidecar, device=device.index)
