"""OpenVINO backend: ONNX -> OpenVINO IR (`model.xml` + `model.bin`), run with the OpenVINO runtime.

Precisions:
- fp32: fp32 weights, and the runner pins `INFERENCE_PRECISION_HINT=f32`. Without the pin the CPU
  plugin runs bf16 on CPUs with AVX512-BF16/AMX, which costs ~1e-2 relative error (seen here).
- bf16: the same fp32 IR, run with `INFERENCE_PRECISION_HINT=bf16` (its own precision, not "fp32").
- fp16: fp16-compressed weights (`save_model(compress_to_fp16=True)`). Inference precision is f16
  where the device reports FP16 in `OPTIMIZATION_CAPABILITIES` (GPU, NPU, ARM CPUs); elsewhere f32,
  because an `f16` hint on an x86 CPU without FP16 silently becomes bf16 (seen here with 2026.4).
- int8: post-training quantization with NNCF on the calibration feeds; layers NNCF leaves in float
  run at f32.

Profiles come from the CPU plugin's own counters: a second compiled model with `PERF_COUNT` on, whose
request's `get_profiling_info()` gives each executed node's time after every inference. The plugin runs
its own graph (fused FullyConnected+Gelu, tokenised attention `Subgraph`s, inserted reorders); each of its
nodes names the IR operations it runs in its rt_info `originalLayersNames`, and those are traced back to
the ONNX nodes (the ONNX frontend keeps node names and tensor names).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Availability,
    Backend,
    BuildOptions,
    BuildResult,
    EngineLoadError,
    ModelSource,
    Runner,
    RuntimeAdapterError,
    TensorSpec,
)
from .options import RuntimeOptions, options_for
from .profiling import (
    NodeTime,
    ProfileRequest,
    RuntimeProfile,
    SourceNode,
    fill_from_neighbours,
    median_per_node,
    trace_sources,
)

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Devices that are not in `core.available_devices` but dispatch to the ones that are.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
NNCF_MODEL_TYPES = ("transformer", "none")
OVERFLOW_FIXES = ("auto", "enable", "first_layer_only", "disable")
CONFIG_FILE = "openvino_config.json"
_REPORTED_PROPERTIES = (
    "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
)

# The hint each precision pins; fp16 is decided per device in `inference_precision`.
_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def one_line(exc: BaseException) -> str:
    """The most telling line of an OpenVINO exception (they start with 'Exception from file:line')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0][:300]


def check_device(device: str, available: list[str] | tuple[str, ...]) -> str:
    """Validate an OpenVINO device name against what this machine has; returns the name to use."""
    base = device.split(":")[0].split(".")[0].upper()
    if base in VIRTUAL_DEVICES:
        return device
    present = {d.upper() for d in available} | {d.split(".")[0].upper() for d in available}
    if device.upper() not in present:
        listed = ", ".join(available) or "none"
        raise RuntimeAdapterError(
            f"OpenVINO device {device!r} is not present here (available: {listed}; "
            f"virtual: {', '.join(VIRTUAL_DEVICES)})"
        )
    return device


def inference_precision(precision: str, device_capabilities: list[str] | tuple[str, ...]) -> tuple[str, str]:
    """(INFERENCE_PRECISION_HINT value, why) for a precision on a device with these capabilities."""
    if precision != "fp16":
        return _PRECISION_HINTS[precision], f"{precision} pins {_PRECISION_HINTS[precision]}"
    if "FP16" in device_capabilities:
        return "f16", "fp16 weights, f16 inference (the device reports FP16)"
    return "f32", ("fp16 weights decompressed to f32 at load: the device does not report FP16, and an "
                   "f16 hint would fall back to bf16 on CPUs with AVX512-BF16")


@dataclass(frozen=True)
class OpenVINOOptions(RuntimeOptions):
    performance_hint: str | None = None  # LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT
    num_streams: int | str | None = None  # a positive int or "AUTO"
    # "transformer" is NNCF's recommendation for ViTs (attention-aware scopes); "none" its generic scheme.
    nncf_model_type: str = "transformer"
    # SmoothQuant (part of NNCF's transformer preset) off by default: on hvt_s_1 it took the int8 engine's
    # worst-sample cosine to 0.974 against 0.997 without it, and without it deit_s (0.9992), cvt_13 (0.9983)
    # and vit_resnas_tiny lose nothing (seeded inputs and calibration, random init; debug notes in README).
    smooth_quant: bool = False
    # NNCF's overflow fix (7-bit weights): x86 CPUs without VNNI multiply u8 x s8 with a 16-bit pairwise sum
    # that saturates. "auto" applies it to every layer on such a CPU (NNCF's default, first_layer_only, left the
    # small HVT's int8 output 0.248 of scale off there, against 0.073 with enable, on an AVX2-only EPYC) and
    # NNCF's default elsewhere.
    overflow_fix: str = "auto"

    def __post_init__(self) -> None:
        if self.performance_hint is not None:
            hint = self.performance_hint.upper()
            if hint not in PERFORMANCE_HINTS:
                raise RuntimeAdapterError(
                    f"OpenVINO performance_hint {hint!r} is not one of {', '.join(PERFORMANCE_HINTS)}")
            object.__setattr__(self, "performance_hint", hint)
        streams = self.num_streams
        if streams is not None and not ((isinstance(streams, str) and streams.upper() == "AUTO")
                                        or (isinstance(streams, int) and streams > 0)):
            raise RuntimeAdapterError(f"OpenVINO num_streams must be a positive int or 'AUTO', got {streams!r}")
        if self.overflow_fix not in OVERFLOW_FIXES:
            raise RuntimeAdapterError(f"overflow_fix must be one of {OVERFLOW_FIXES}, got {self.overflow_fix!r}")
        if self.nncf_model_type not in NNCF_MODEL_TYPES:
            raise RuntimeAdapterError(
                f"nncf_model_type must be one of {NNCF_MODEL_TYPES}, got {self.nncf_model_type!r}")


def runtime_config(options: BuildOptions, device: str, hint: str) -> dict[str, Any]:
    """The compile_model properties for these options (also recorded in the build details)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint}
    settings = options_for(options.runtime, OpenVINOOptions, "openvino")
    if settings.performance_hint is not None:
        config["PERFORMANCE_HINT"] = settings.performance_hint
    streams = settings.num_streams
    if streams is not None:
        config["NUM_STREAMS"] = streams.upper() if isinstance(streams, str) else streams
    if options.threads and device.upper().startswith("CPU"):
        # Only the CPU plugin has this property; other devices reject it.
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    return config


def _tensor_spec(port) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except Exception:  # element types numpy cannot express (e.g. bf16 IO) read as float32
        dtype = "float32"
    return TensorSpec(port.get_any_name(), shape, dtype)


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, xml_path: Path, device: str, config: dict[str, Any]):
        super().__init__()
        self.xml_path = Path(xml_path)
        self.device = device
        self.config = dict(config)
        self.compiled: Any = None
        self.request: Any = None
        # What the plugin actually runs with, read back after compiling.
        self.effective: dict[str, str | None] = {}

    def _activate(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.xml_path))
        except Exception as exc:
            raise EngineLoadError(
                f"OpenVINO cannot read {self.xml_path} (corrupt or not an OpenVINO IR?): {one_line(exc)}"
            ) from None
        try:
            self.compiled = core.compile_model(model, self.device, self.config)
        except Exception as exc:
            raise EngineLoadError(f"OpenVINO cannot compile {self.xml_path} for {self.device}: "
                                  f"{one_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        self.input_specs = [_tensor_spec(port) for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        self.effective = {key: self._property(key) for key in _REPORTED_PROPERTIES}

    def _property(self, key: str) -> str | None:
        try:
            value = self.compiled.get_property(key)
        except Exception:  # not every device exposes every property
            return None
        # Element types print as "<Type: 'float32'>"; their short name ("f32") is what hints use.
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def _deactivate(self) -> None:
        self.request = None
        self.compiled = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {s.name: np.ascontiguousarray(feed[s.name], dtype=s.dtype) for s in self.input_specs}
        try:
            results = self.request.infer(inputs)
        except Exception as exc:
            raise RuntimeAdapterError(f"openvino: inference failed: {one_line(exc)}") from None
        # The request reuses its output tensors on the next call: copy them out.
        return {name: np.array(results[port]) for name, port in
                zip(self.output_names, self.compiled.outputs, strict=True)}

    def profiling_unavailable(self) -> str | None:
        return None

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """Runs through a second compiled model with PERF_COUNT on; this runner's (the timed one) has it off."""
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(self.xml_path))
        compiled = core.compile_model(model, self.device, {**self.config, "PERF_COUNT": True})
        infer = compiled.create_infer_request()
        kinds: dict[str, tuple[str, str]] = {}  # node -> (type, kernel)
        runs: list[dict[str, float]] = []
        walls = []
        for i in range(request.warmup + request.runs):
            feed = {s.name: np.ascontiguousarray(request.feed(i)[s.name], dtype=s.dtype) for s in self.input_specs}
            start = time.perf_counter()
            infer.infer(feed)
            walls.append((time.perf_counter() - start) * 1e3)
            if i >= request.warmup:  # the counters hold the last inference only
                runs.append(_executed(kinds, infer.get_profiling_info()))
        origins = _runtime_origins(compiled.get_runtime_model(), trace_sources(request.source, _graph_nodes(model)))
        nodes = [NodeTime(name, kinds[name][0], ms, origins.get(name, ()), kinds[name][1])
                 for name, ms in median_per_node(runs).items()]
        threads = self.config.get("INFERENCE_NUM_THREADS")
        return RuntimeProfile(self.name, nodes, request.runs, float(np.median(walls[request.warmup:])),
                              threads=int(threads) if threads else None)


def _executed(kinds: dict[str, tuple[str, str]], info) -> dict[str, float]:
    """One inference's counters: node -> ms, for the nodes that ran (fused ones report NOT_RUN)."""
    import openvino as ov

    times = {}
    for entry in info:
        if entry.status == ov.ProfilingInfo.Status.EXECUTED:
            kinds.setdefault(entry.node_name, (entry.node_type, entry.exec_type))
            times[entry.node_name] = entry.real_time.total_seconds() * 1e3
    return times


def _tensor_id(output) -> tuple[str, ...]:
    """A port's tensor names (the ONNX tensor names, kept by the ONNX frontend), or a made-up unique id."""
    names = sorted(output.get_names())
    return tuple(names) or (f"{output.get_node().get_friendly_name()}:{output.get_index()}",)


def _graph_nodes(model) -> list[SourceNode]:
    nodes = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            continue
        inputs = tuple(t for port in op.inputs() for t in _tensor_id(port.get_source_output()))
        nodes.append(SourceNode(op.get_friendly_name(), inputs, tuple(t for o in op.outputs() for t in _tensor_id(o))))
    return nodes


def _runtime_origins(runtime_model, ir_sources: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """runtime node -> ONNX nodes, through the IR operations its rt_info `originalLayersNames` lists."""
    found: dict[str, tuple[str, ...]] = {}
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        names = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        onnx_nodes = [n for layer in names.split(",") if layer for n in ir_sources.get(layer, ())]
        found[op.get_friendly_name()] = tuple(dict.fromkeys(onnx_nodes))
    return fill_from_neighbours(_graph_nodes(runtime_model), found)


class OpenVINOBackend(Backend):
    name = "openvino"
    pip_extra = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    source_kind = "onnx"
    options_type = OpenVINOOptions
    engine_file = "model.xml"

    def availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(False, None, f"the openvino package is not installed ({exc})")
        devices = tuple(ov.Core().available_devices)
        reason = "" if devices else "OpenVINO sees no device"
        return Availability(True, ov.__version__.split("-")[0], reason, devices,
                            can_build=True, can_run=bool(devices))

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        import openvino as ov

        self.check_precision(options.precision)
        onnx_path = self.onnx_input(source)
        core = ov.Core()
        device = check_device(options.device or "CPU", core.available_devices)
        hint, why = inference_precision(options.precision, _capabilities(core, device))
        config = runtime_config(options, device, hint)
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as exc:
            message = f"OpenVINO cannot convert {onnx_path}: {one_line(exc)}"
            raise RuntimeAdapterError(message) from None
        details: dict[str, Any] = {}
        if options.precision == "int8":
            model, details["int8"] = _quantize(model, options)
        compress = options.precision == "fp16"
        ov.save_model(model, str(Path(out_dir) / self.engine_file), compress_to_fp16=compress)
        details.update({
            "device": device, "runtime_config": config, "inference_precision": hint,
            "inference_precision_reason": why, "weights": "fp16" if compress else
            ("int8 (NNCF fake-quantize)" if options.precision == "int8" else "fp32"),
            "openvino": ov.__version__.split("-")[0],
        })
        (Path(out_dir) / CONFIG_FILE).write_text(json.dumps(
            {"device": device, "precision": options.precision, "config": config}, indent=2))
        return BuildResult(files=(self.engine_file, "model.bin", CONFIG_FILE), details=details)

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        path = self.existing_engine(artifact_dir, engine_file)
        if not path.with_suffix(".bin").is_file():
            raise EngineLoadError(f"{path.with_suffix('.bin')} (the IR weights) is missing; re-run export")
        device, config = self._load_config(Path(artifact_dir), options)
        return OpenVINORunner(path, device, config)

    def _load_config(self, artifact_dir: Path, options: BuildOptions) -> tuple[str, dict[str, Any]]:
        """The config saved at build time, with the device, threads and hints given at load on top.

        The saved precision hint stays authoritative (a bf16 artifact must not run f32 because the
        loader passed default options); it is recomputed only when the device changes.
        """
        import openvino as ov

        saved_path = artifact_dir / CONFIG_FILE
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
        core = ov.Core()
        device = check_device(options.device or saved.get("device") or "CPU", core.available_devices)
        hint = saved.get("config", {}).get("INFERENCE_PRECISION_HINT")
        if hint is None or device != saved.get("device"):
            precision = saved.get("precision", options.precision)
            hint, _ = inference_precision(precision, _capabilities(core, device))
        config = {**saved.get("config", {}), **runtime_config(options, device, hint)}
        if not device.upper().startswith("CPU"):
            config.pop("INFERENCE_NUM_THREADS", None)
        return device, config


def _capabilities(core, device: str) -> list[str]:
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # virtual devices (AUTO, ...) have no capability list of their own
        return []


def _quantize(model, options: BuildOptions):
    """NNCF post-training quantization on the calibration feeds; returns (model, details)."""
    if not options.calibration:
        raise RuntimeAdapterError(
            "openvino int8 needs calibration data (BuildOptions.calibration: a list of feed dicts, "
            "~300 real samples); none was given"
        )
    try:
        import nncf
    except ImportError as exc:
        raise RuntimeAdapterError(f"openvino int8 needs nncf: pip install -e .[openvino] ({exc})") from None
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    settings = options_for(options.runtime, OpenVINOOptions, "openvino")
    kwargs: dict[str, Any] = {}
    if settings.nncf_model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    overflow_fix = resolve_overflow_fix(settings.overflow_fix)
    advanced: dict[str, Any] = {"overflow_fix": OverflowFix(overflow_fix)}
    if not settings.smooth_quant:  # alpha -1 switches SmoothQuant off
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=-1)
    kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    samples = list(options.calibration)
    with _quiet_nncf():
        quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples), **kwargs)
    return quantized, {"calibration_samples": len(samples), "nncf": nncf.__version__,
                       "nncf_model_type": settings.nncf_model_type, "smooth_quant": settings.smooth_quant,
                       "overflow_fix": overflow_fix}


def resolve_overflow_fix(setting: str, cpu_flags: str | None = None) -> str:
    """NNCF's OverflowFix value for `setting`: "auto" is "enable" on an x86 CPU without VNNI (its flags from
    /proc/cpuinfo), NNCF's default "first_layer_only" where the flags say VNNI or cannot be read."""
    if setting != "auto":
        return setting
    if cpu_flags is None:
        try:
            cpu_flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "first_layer_only"
    flags = set(cpu_flags.split())
    x86 = bool(flags & {"avx2", "sse4_2"})
    return "enable" if x86 and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "first_layer_only"


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF draws a progress bar per algorithm on the terminal: keep the CLI's output to what was asked."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
