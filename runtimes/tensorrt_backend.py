"""TensorRT backend: ONNX -> serialized engine (`model.engine` + `model.engine.json` sidecar).

Written against the `tensorrt` Python API (10.x and 11.x) and `cuda-python` for device memory.
Neither installs here (TensorRT wheels come from NVIDIA's index; NVIDIA's containers and JetPack
ship them), so everything that does not touch a GPU is plain Python and tested without them.

Decisions:

* **Route.** TensorRT 10.12 deprecated weak typing (builder precision flags) and 11.0 removed it:
  every network is strongly typed, so an engine's precision is the ONNX graph's precision.
  - TensorRT >= 11: strongly typed only. fp16 needs an fp16 ONNX graph with fp32 islands (the
    export stage's fp16 pass, or ModelOpt AutoCast); an fp32 graph asked for fp16 fails with a
    message saying so. int8 needs a Q/DQ graph (explicit quantization).
  - 10.12 <= TensorRT < 11: strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) when the
    graph already carries the precision; an fp32 graph asked for fp16 falls back to the deprecated
    flag route, and the details say so.
  - TensorRT < 10.12: the flag route: `BuilderFlag.FP16` (+ `INT8` for Q/DQ graphs), with
    LayerNorm, Softmax and Reduce layers pinned to fp32 (`layer.precision`, output types and
    `OBEY_PRECISION_CONSTRAINTS`), the classic fix for fp16 LayerNorm overflow in ViTs.
  `TensorRTOptions.route` = "strong" / "flags" forces one where the version allows it.
  Implicit int8 calibration (`IInt8Calibrator`, deprecated in 10.1, removed in 11) is not used:
  `BuildOptions.calibration` belongs to the Q/DQ pass that makes the int8 graph.
* **Profile.** One optimisation profile: min = min(batch), opt = batch[0] (the primary batch,
  listed first; the export stage passes (1, 4), so tactics are tuned for batch-1 latency, the edge
  case) unless `TensorRTOptions.opt_batch` says otherwise, max = max(batch).
* **Engine cache key.** TensorRT version, GPU name, compute capability, sha256 of the ONNX (and its
  external data), precision, route, builder flags, TF32, workspace, profile, DLA settings. It is
  stored in the sidecar; `load` refuses an engine whose TensorRT version, GPU or compute capability
  differ from this machine's, or whose bytes no longer match. Builds reuse a cached engine only when
  the whole key matches (`engine_cache`, default on, under `cache_dir`).
* **Timing cache** per (TensorRT version, GPU, compute capability) file, loaded before and saved
  after every build (`timing_cache` overrides the path). `create_timing_cache` returns None for data it
  cannot deserialize, and `set_timing_cache` False for a cache from another device: either way the build
  starts from a fresh cache, with one warning line, and the save after it replaces the file.
* **DLA** (Jetson): `dla_core` = n runs on that DLA core with GPU fallback
  (`gpu_fallback`, default True); DLA runs fp16/int8 only. NVIDIA's DLA restrictions: DLA runs static
  shapes only (min = opt = max), otherwise every layer falls back to the GPU (or, without fallback, the
  build fails). So a DLA build has a static profile at its one batch, and asking for several batches is
  refused (build one engine per batch). DLA is absent from TensorRT 11.0-11.3 and returns in 11.4.1 (on
  Orin with JetPack >= 7.2.2, per the release notes); the 11.0-11.4.0 bindings still expose
  `DeviceType.DLA` and `Builder.num_DLA_cores` (tests/data/tensorrt_api), so the gate is the version.
* **fp32** builds clear `BuilderFlag.TF32` (on by default) so fp32 parity means fp32;
  `tf32 = True` keeps it.
* **Runner.** Device buffers are allocated once, at the profile's max shapes, with cuda-python's
  runtime API; `synchronize()` waits on the runner's stream (timing with CUDA events is the
  benchmark harness's job).
* **Per-layer profile.** Engines are built with `ProfilingVerbosity.DETAILED` (it stores layer
  metadata, not slower kernels), so the engine inspector names each layer's ONNX nodes (`[ONNX Layer:
  name]`). `profile` runs a second execution context with an `IProfiler` (`LayerTimes`); the timed
  context never has one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Availability,
    Backend,
    BuildOptions,
    BuildResult,
    EngineLoadError,
    InputMismatchError,
    ModelSource,
    Runner,
    RuntimeAdapterError,
    TensorSpec,
    check_batches,
    first_line,
)
from .options import RuntimeOptions, options_for
from .profiling import NodeTime, ProfileRequest, RuntimeProfile, median_per_node

MIN_VERSION = (10, 0)
STRONG_PREFERRED = (10, 12)  # weak typing deprecated
STRONG_ONLY = (11, 0)  # weak typing removed
ROUTES = ("auto", "strong", "flags")
ENGINE_FILE = "model.engine"
SIDECAR_FILE = "model.engine.json"
# Layer types kept in fp32 on the flag route: LayerNorm statistics, Softmax and reductions
# overflow or lose too much in fp16 (NVIDIA/TensorRT issues 2781, 3692).
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
# Key fields that tie an engine to a machine: an engine is not portable across them.
DEVICE_KEY_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability")
UNAVAILABLE_REASON = (
    "the tensorrt Python package is not installed (NVIDIA's TensorRT container or JetPack provides it)"
)
NO_CUDA_PYTHON_REASON = "cuda-python is not installed (pip install -e .[tensorrt]); the runner needs it"
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- versions and graphs

def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) from "10.13.0.35" or "11.0.0"; missing parts read as 0."""
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    if not numbers:
        raise RuntimeAdapterError(f"cannot read a TensorRT version from {text!r}")
    return tuple((numbers + [0, 0])[:3])  # type: ignore[return-value]


@dataclass(frozen=True)
class GraphTypes:
    """What precision an ONNX graph already carries."""

    float16: bool
    qdq: bool
    external_files: tuple[str, ...] = ()


_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def inspect_onnx(path: Path) -> GraphTypes:
    """fp16 tensors / Q/DQ nodes in the graph, read without loading external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    fp16 = onnx.TensorProto.FLOAT16
    typed = [*graph.input, *graph.output, *graph.value_info]
    float16 = (any(v.type.tensor_type.elem_type == fp16 for v in typed)
               or any(t.data_type == fp16 for t in graph.initializer)
               or any(n.op_type == "Cast" and _cast_target(n) == fp16 for n in graph.node))
    qdq = any(n.op_type in _QDQ_OPS for n in graph.node)
    external = sorted({entry.value for t in graph.initializer for entry in t.external_data
                       if entry.key == "location"})
    return GraphTypes(float16=float16, qdq=qdq, external_files=tuple(external))


def _cast_target(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def files_sha256(path: Path, external_files: Sequence[str] = ()) -> str:
    """sha256 over a file and the files beside it that it names (an ONNX model's external data), read in chunks."""
    digest = hashlib.sha256()
    for file in (Path(path), *(Path(path).parent / name for name in external_files)):
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- route, profile, DLA

@dataclass(frozen=True)
class Route:
    name: str  # "strong" or "flags"
    flags: tuple[str, ...]  # BuilderFlag names to set
    pin_fp32: bool  # keep FP32_LAYER_TYPES in fp32 (flag route with reduced precision only)
    reason: str


def choose_route(version: tuple[int, ...], precision: str, graph: GraphTypes,
                 requested: str = "auto") -> Route:
    """Pick the strongly typed or builder-flag route; see the module docstring for the rules."""
    if requested not in ROUTES:
        raise RuntimeAdapterError(f"TensorRT route {requested!r} is not one of {', '.join(ROUTES)}")
    if tuple(version[:2]) < MIN_VERSION:
        raise RuntimeAdapterError(f"TensorRT {_v(version)} is too old; this adapter needs >= 10.0")
    if requested == "flags" and tuple(version[:2]) >= STRONG_ONLY:
        raise RuntimeAdapterError(f"TensorRT {_v(version)} removed weak typing; the flag route needs < 11")
    if precision == "fp32":
        return _fp32_route(version, graph, requested)
    if precision == "fp16":
        return _fp16_route(version, graph, requested)
    if precision == "int8":
        return _int8_route(version, graph, requested)
    raise RuntimeAdapterError(f"TensorRT cannot build precision {precision!r}")


def _v(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def _prefers_strong(version: tuple[int, ...], requested: str) -> bool:
    return requested == "strong" or (requested == "auto" and tuple(version[:2]) >= STRONG_PREFERRED)


def _fp32_route(version, graph: GraphTypes, requested: str) -> Route:
    if graph.float16 or graph.qdq:
        raise RuntimeAdapterError(
            "this ONNX graph already carries fp16 or Q/DQ tensors; build it as that precision, not fp32"
        )
    if _prefers_strong(version, requested):
        return Route("strong", (), False, "fp32 graph, strongly typed network")
    return Route("flags", (), False, "fp32: no precision flags")


def _fp16_route(version, graph: GraphTypes, requested: str) -> Route:
    if graph.float16 and requested != "flags":
        return Route("strong", (), False, "the graph carries fp16 (with its fp32 islands): strongly typed")
    if graph.float16:
        return Route("flags", ("FP16",), True, "fp16 graph on the flag route (forced)")
    if tuple(version[:2]) >= STRONG_ONLY or requested == "strong":
        raise RuntimeAdapterError(
            f"TensorRT {_v(version)} builds fp16 only from an fp16 ONNX graph on the strongly typed route "
            "(fp16 tensors with fp32 LayerNorm/Softmax islands: the export stage's fp16 pass or ModelOpt "
            "AutoCast); this graph has only fp32 tensors"
        )
    note = ("deprecated weak-typing fallback (TensorRT >= 10.12): export an fp16 graph for the strongly "
            "typed route" if tuple(version[:2]) >= STRONG_PREFERRED else "builder-flag route")
    return Route("flags", ("FP16",), True, f"fp32 graph + BuilderFlag.FP16, norms pinned fp32; {note}")


def _int8_route(version, graph: GraphTypes, requested: str) -> Route:
    if not graph.qdq:
        raise RuntimeAdapterError(
            "TensorRT int8 needs a Q/DQ ONNX graph (explicit quantization, e.g. ModelOpt ONNX PTQ on the "
            "calibration samples); implicit calibration (IInt8Calibrator) is deprecated since 10.1 and "
            "removed in 11, so this adapter does not calibrate"
        )
    if _prefers_strong(version, requested) or tuple(version[:2]) >= STRONG_ONLY:
        return Route("strong", (), False, "Q/DQ graph, strongly typed network")
    return Route("flags", ("INT8", "FP16"), True,
                 "Q/DQ graph + BuilderFlag.INT8/FP16 (explicit quantization)")


def optimisation_profile(specs: Sequence[TensorSpec], batch: Sequence[int],
                         opt_batch: int | None = None) -> dict[str, tuple[tuple[int, ...], ...]]:
    """name -> (min, opt, max) shapes: min = min(batch), opt = batch[0] (or opt_batch), max = max(batch)."""
    batches = check_batches(batch)
    low, high = min(batches), max(batches)
    opt = batches[0] if opt_batch is None else int(opt_batch)
    if not low <= opt <= high:
        raise RuntimeAdapterError(f"opt_batch {opt} is outside the batch range [{low}, {high}]")
    return {spec.name: tuple(spec.shape_at(b) for b in (low, opt, high)) for spec in specs}


@dataclass(frozen=True)
class TensorRTOptions(RuntimeOptions):
    route: str = "auto"  # "strong" or "flags" forces one where the version allows it
    opt_batch: int | None = None  # the batch tactics are tuned for (default: the first requested)
    engine_cache: bool = True  # reuse an engine built for exactly this cache key
    cache_dir: str | None = None  # default: $VIT_DEPLOY_CACHE, else ~/.cache/vit-deploy
    timing_cache: str | None = None  # a timing-cache file (default: one per TensorRT version and GPU)
    dla_core: int | None = None  # run on this DLA core (Jetson), with GPU fallback
    gpu_fallback: bool = True
    workspace_mib: int | None = None
    tf32: bool | None = None  # None: on for reduced precision, off for fp32 (so fp32 parity means fp32)

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise RuntimeAdapterError(f"TensorRT route {self.route!r} is not one of {', '.join(ROUTES)}")
        if self.dla_core is not None and self.dla_core < 0:
            raise RuntimeAdapterError(f"dla_core must be a DLA core index (0, 1, ...), got {self.dla_core!r}")
        for name in ("opt_batch", "workspace_mib"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RuntimeAdapterError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class DlaSettings:
    core: int
    gpu_fallback: bool = True


# TensorRT releases without DLA (release notes): from 11.0 up to, not including, 11.4.1.
NO_DLA = ((11, 0, 0), (11, 4, 1))


def has_dla(version: tuple[int, ...]) -> bool:
    return not NO_DLA[0] <= tuple(version[:3]) < NO_DLA[1]


def dla_settings(settings: TensorRTOptions, precision: str,
                 version: tuple[int, ...] = MIN_VERSION) -> DlaSettings | None:
    if settings.dla_core is None:
        return None
    if not has_dla(version):
        raise RuntimeAdapterError(
            f"this TensorRT ({_v(version)}) has no DLA: it is absent from 11.0-11.3 and returns in 11.4.1 "
            "(Orin, JetPack >= 7.2.2); use TensorRT 10.x or >= 11.4.1, or drop dla_core")
    if precision not in ("fp16", "int8"):
        raise RuntimeAdapterError(f"DLA runs fp16 or int8 only, not {precision}")
    return DlaSettings(settings.dla_core, settings.gpu_fallback)


def dla_batch(batch: Sequence[int]) -> int:
    """The one batch a DLA engine serves: DLA needs min = opt = max, so several batches are refused."""
    batches = sorted(set(check_batches(batch)))
    if len(batches) > 1:
        raise RuntimeAdapterError(
            f"DLA runs static shapes only (min = opt = max, NVIDIA's DLA restrictions), so a DLA engine serves "
            f"one batch: build one engine per batch with a single --batch (asked for {', '.join(map(str, batches))})")
    return batches[0]


# ---------------------------------------------------------------- cache keys and sidecar

@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"
    index: int = 0

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower() + f"-sm{self.compute_capability}"


# Every field of the key, by name (keyword-only): one argument per part of the engine's identity.
def engine_cache_key(*, tensorrt_version: str, device: DeviceInfo, model_sha256: str, precision: str,  # noqa: PLR0913
                     route: Route, builder_flags: Sequence[str], profile: Mapping[str, Any],
                     dla: DlaSettings | None, workspace_mib: int | None) -> dict[str, Any]:
    return {
        "tensorrt_version": tensorrt_version,
        "gpu_name": device.name,
        "compute_capability": device.compute_capability,
        "model_sha256": model_sha256,
        "precision": precision,
        "route": route.name,
        "builder_flags": sorted(builder_flags),
        "profile": {name: [list(s) for s in shapes] for name, shapes in sorted(profile.items())},
        "dla": asdict(dla) if dla else None,
        "workspace_mib": workspace_mib,
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def key_mismatches(saved: Mapping[str, Any], current: Mapping[str, Any],
                   fields: Sequence[str] = DEVICE_KEY_FIELDS) -> list[str]:
    return [f"{f}: engine {saved.get(f)!r}, here {current.get(f)!r}" for f in fields
            if saved.get(f) != current.get(f)]


def verify_sidecar(sidecar: Mapping[str, Any], engine_sha256: str, here: Mapping[str, Any]) -> None:
    """Refuse an engine built elsewhere (TensorRT/GPU) or whose bytes changed since it was built."""
    key = sidecar.get("key") or {}
    problems = key_mismatches(key, here)
    if sidecar.get("engine_sha256") != engine_sha256:
        problems.append("engine bytes differ from the ones the sidecar describes")
    if problems:
        raise EngineLoadError("TensorRT engine is stale for this machine (" + "; ".join(problems)
                              + "); engines are not portable across GPUs or TensorRT versions: rebuild it")


def timing_cache_path(cache_dir: Path, tensorrt_version: str, device: DeviceInfo) -> Path:
    """One timing cache per TensorRT version and GPU: its entries are only valid there."""
    return Path(cache_dir) / "tensorrt" / "timing" / f"trt{tensorrt_version}-{device.slug}.cache"


def engine_cache_dir(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / "tensorrt" / "engines" / key_digest(key)


def default_cache_dir(settings: TensorRTOptions) -> Path:
    configured = settings.cache_dir or os.environ.get("VIT_DEPLOY_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vit-deploy"


def lookup_cached_engine(folder: Path, key: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """(engine bytes, sidecar) cached for exactly this key, or None (absent, other key, or bytes changed)."""
    engine_path, sidecar_path = Path(folder) / ENGINE_FILE, Path(folder) / SIDECAR_FILE
    if not (engine_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text())
        engine = engine_path.read_bytes()
    except (OSError, ValueError):
        return None
    if sidecar.get("key") != dict(key) or sidecar.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
        return None
    return engine, sidecar


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fp32_layer_indices(layer_types: Sequence[str]) -> list[int]:
    return [i for i, kind in enumerate(layer_types) if kind in FP32_LAYER_TYPES]


# ---------------------------------------------------------------- CUDA through cuda-python

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


# ---------------------------------------------------------------- building (needs tensorrt)

@dataclass
class BuildPlan:
    """Everything the builder needs besides the ONNX path, decided before touching TensorRT."""

    route: Route
    profile: dict[str, tuple[tuple[int, ...], ...]]
    precision: str
    dla: DlaSettings | None = None
    workspace_mib: int | None = None
    tf32: bool = False
    timing_cache: Path | None = None

    def builder_flags(self) -> list[str]:
        flags = list(self.route.flags)
        if self.route.pin_fp32:
            flags.append("OBEY_PRECISION_CONSTRAINTS")
        if self.dla and self.dla.gpu_fallback:
            flags.append("GPU_FALLBACK")
        return flags + (["TF32"] if self.tf32 else [])


def create_network(trt, builder, route: Route, version: tuple[int, ...]):
    # STRONGLY_TYPED is opt-in on 10.x and deprecated (ignored) on 11; EXPLICIT_BATCH is never
    # needed: networks are explicit-batch since 10.0 and the flag is gone in 11.
    flags = 0
    if route.name == "strong" and tuple(version[:2]) < STRONG_ONLY:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parse_onnx(trt, network, logger, path: Path):
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so external-data weights resolve next to the model.
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0].splitlines()[0] if errors else "no error reported"
        raise RuntimeAdapterError(f"TensorRT's ONNX parser rejected {path}: {first}{more}")
    return parser


def pin_fp32_layers(trt, network) -> list[str]:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    pinned = []
    for i in fp32_layer_indices([layer.type.name for layer in layers]):
        layer = layers[i]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def configure(trt, builder, network, plan: BuildPlan):
    """A builder config for the plan; returns (config, names of layers pinned to fp32)."""
    config = builder.create_builder_config()
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None:  # layer metadata (the ONNX nodes of each layer) for per-layer profiles
        config.profiling_verbosity = verbosity.DETAILED
    if plan.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.workspace_mib) << 20)
    # The engine cache key records plan.builder_flags(): set exactly those, so the key can't drift from the build.
    for flag in plan.builder_flags():
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = pin_fp32_layers(trt, network) if plan.route.pin_fp32 else []
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not plan.tf32:
        config.clear_flag(tf32)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in plan.profile.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if plan.dla:
        _configure_dla(trt, builder, config, plan.dla)
    return config, pinned


def _configure_dla(trt, builder, config, dla: DlaSettings) -> None:
    cores = builder.num_DLA_cores
    if dla.core >= cores:
        raise RuntimeAdapterError(f"DLA core {dla.core} requested; this device has {cores} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla.core


def attach_timing_cache(config, path: Path | None):
    """The saved timing cache attached to `config`, or a fresh one (one warning) if it cannot be used."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    if data:
        # None: data TensorRT cannot deserialize (truncated, another format). ignore_mismatch=False: a cache
        # from another GPU/version is refused, not silently mixed in.
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        why = "cannot be read" if cache is None else "was made on another GPU or TensorRT version"
        log.warning("tensorrt: timing cache %s %s; starting a fresh one (the build overwrites it)", path, why)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is not None:
        _atomic_write(path, bytes(cache.serialize()))


def build_serialized(trt, onnx_path: Path, plan: BuildPlan,
                     version: tuple[int, ...]) -> tuple[bytes, list[str]]:
    """Parse, configure and build; returns (engine bytes, layers pinned to fp32)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(trt, builder, plan.route, version)
    # The parser owns the weights the network points at: it must outlive the build.
    parser = parse_onnx(trt, network, logger, onnx_path)
    config, pinned = configure(trt, builder, network, plan)
    attach_timing_cache(config, plan.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeAdapterError("TensorRT failed to build the engine (the builder log above says why)")
    save_timing_cache(config, plan.timing_cache)
    del parser
    return bytes(serialized), pinned


# ---------------------------------------------------------------- runner

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

        self._cudart = cudart = import_cudart()
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


# ---------------------------------------------------------------- backend

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
        devices, reason = cuda_devices(import_cudart())
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
        cudart = import_cudart()
        index = device_index(options.device)
        devices, reason = cuda_devices(cudart)
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


def make_plan(version: tuple[int, ...], options: BuildOptions, graph: GraphTypes,
              specs: Sequence[TensorSpec]) -> BuildPlan:
    """All pure decisions for a build: route, profile, DLA, workspace, TF32."""
    settings = options_for(options.runtime, TensorRTOptions, "tensorrt")
    route = choose_route(version, options.precision, graph, settings.route)
    dla = dla_settings(settings, options.precision, version)
    batches = (dla_batch(options.batch),) if dla else options.batch
    profile = optimisation_profile(specs, batches, settings.opt_batch)
    return BuildPlan(route=route, profile=profile, precision=options.precision,
                     dla=dla, workspace_mib=settings.workspace_mib or None,
                     tf32=settings.tf32 if settings.tf32 is not None else options.precision != "fp32")


def write_engine(folder: Path, engine: bytes, key: Mapping[str, Any], source: ModelSource,
                 fp32_layers: Sequence[str] = ()) -> dict[str, Any]:
    """Write model.engine and its sidecar (key, engine hash, IO names) into `folder`."""
    sidecar = {
        "key": dict(key), "key_digest": key_digest(key),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "inputs": [{"name": s.name, "shape": [d if isinstance(d, int) else None for d in s.shape],
                    "dtype": s.dtype} for s in source.input_specs],
        "outputs": list(source.output_names),
        "fp32_layers": list(fp32_layers),
    }
    _atomic_write(Path(folder) / ENGINE_FILE, engine)
    _atomic_write(Path(folder) / SIDECAR_FILE, json.dumps(sidecar, indent=2).encode())
    return sidecar


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineLoadError(f"engine file {engine_path} is missing; re-run export")
    sidecar_path = engine_path.with_name(engine_path.name + ".json")
    if not sidecar_path.is_file():
        raise EngineLoadError(f"{sidecar_path.name} is missing next to {engine_path}: without its cache key "
                              "the engine cannot be checked against this GPU; re-run export")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except ValueError as exc:
        raise EngineLoadError(f"{sidecar_path} is not valid JSON ({exc}); re-run export") from None
    missing = [k for k in ("key", "engine_sha256", "inputs", "outputs") if k not in sidecar]
    if missing:
        raise EngineLoadError(f"{sidecar_path} lacks {', '.join(missing)}; re-run export")
    return sidecar
