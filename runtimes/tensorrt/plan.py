"""The pure decisions of a TensorRT build, made before TensorRT is touched: route, profile, DLA, TF32.

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
* **DLA** (Jetson): `dla_core` = n runs on that DLA core with GPU fallback
  (`gpu_fallback`, default True); DLA runs fp16/int8 only. NVIDIA's DLA restrictions: DLA runs static
  shapes only (min = opt = max), otherwise every layer falls back to the GPU (or, without fallback, the
  build fails). So a DLA build has a static profile at its one batch, and asking for several batches is
  refused (build one engine per batch). DLA is absent from TensorRT 11.0-11.3 and returns in 11.4.1 (on
  Orin with JetPack >= 7.2.2, per the release notes); the 11.0-11.4.0 bindings still expose
  `DeviceType.DLA` and `Builder.num_DLA_cores` (tests/data/tensorrt_api), so the gate is the version.
* **fp32** builds clear `BuilderFlag.TF32` (on by default) so fp32 parity means fp32;
  `tf32 = True` keeps it.

`BuildPlan` holds the outcome; `build` carries it out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base import BuildOptions, RuntimeAdapterError, TensorSpec, check_batches
from ..options import RuntimeOptions, options_for

MIN_VERSION = (10, 0)
STRONG_PREFERRED = (10, 12)  # weak typing deprecated
STRONG_ONLY = (11, 0)  # weak typing removed
ROUTES = ("auto", "strong", "flags")
# Layer types kept in fp32 on the flag route: LayerNorm statistics, Softmax and reductions
# overflow or lose too much in fp16 (NVIDIA/TensorRT issues 2781, 3692).
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")


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


def fp32_layer_indices(layer_types: Sequence[str]) -> list[int]:
    return [i for i, kind in enumerate(layer_types) if kind in FP32_LAYER_TYPES]


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
