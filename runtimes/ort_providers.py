"""ONNX Runtime's execution providers as typed options, and the check that a session runs on what was asked.

`OrtOptions` names the providers in priority order (`--option providers=cuda,cpu`: `cuda`, `tensorrt`,
`openvino`, `cpu`) with each one's settings, and `provider_settings` turns them into ORT's provider names and
provider options (string values, as ORT's C API takes them). ONNX Runtime falls back silently: a provider its
build lacks is dropped with a Python warning, and one whose libraries fail to load (the CUDA provider without
cuDNN) with a log line; the session then runs on what is left, the CPU provider at the end. `fallback` compares
what was asked with `session.get_providers()`, and `on_fallback` says whether that refuses the engine (the
default) or warns. The CPU provider is always present and runs every node the others do not take, so asking for
`cpu` alone cannot fall back.

The provider option names are ORT's (its execution-provider docs): CUDA `device_id`, `cudnn_conv_algo_search`;
TensorRT `device_id`, `trt_fp16_enable`, `trt_int8_enable`, `trt_engine_cache_enable`, `trt_engine_cache_path`;
OpenVINO `device_type`, `precision`, `num_of_threads`. Only the CPU and OpenVINO providers have run here: the
CUDA and TensorRT settings are written against those docs. Nothing here imports onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineLoadError, RuntimeAdapterError
from .options import RuntimeOptions

# --option providers= names -> ORT's provider names.
PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "openvino": "OpenVINOExecutionProvider", "cpu": "CPUExecutionProvider"}
CPU = PROVIDERS["cpu"]
# The wheel each provider comes in; each replaces the `onnxruntime` wheel (they install the same module).
PACKAGES = {"cuda": "`pip install -e .[onnxruntime-gpu]`",
            "tensorrt": "`pip install -e .[onnxruntime-gpu]` with TensorRT's libraries",
            "openvino": "`pip install -e .[onnxruntime-openvino]`"}
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ON_FALLBACK = ("error", "warn")


@dataclass(frozen=True)
class OrtOptions(RuntimeOptions):
    providers: tuple[str, ...] = ("cpu",)  # priority order: cuda, tensorrt, openvino, cpu
    device_id: int = 0  # the CUDA device of the cuda and tensorrt providers
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # cuda: ORT's default; HEURISTIC or DEFAULT start faster
    trt_fp16: bool = False  # tensorrt: let TensorRT pick fp16 kernels (an fp32 graph then meets fp16 tolerances)
    trt_engine_cache: bool = True  # tensorrt: keep built engines (else every session builds them again)
    trt_cache_dir: str | None = None  # default: $VIT_DEPLOY_CACHE/ort-tensorrt, else ~/.cache/vit-deploy/ort-tensorrt
    openvino_device: str = "CPU"  # openvino: OpenVINO's device_type (CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU, ...)
    on_fallback: str = "error"  # a session that runs without a provider asked for: "error" refuses it, "warn" logs

    def __post_init__(self) -> None:
        names = tuple(_short_name(name) for name in self.providers)
        if not names:
            raise RuntimeAdapterError(f"onnxruntime providers is empty; name one or more of {', '.join(PROVIDERS)}")
        if len(set(names)) != len(names):
            raise RuntimeAdapterError(f"onnxruntime providers {','.join(names)} names one twice")
        object.__setattr__(self, "providers", names)
        search = self.cudnn_conv_algo_search.upper()
        if search not in CONV_ALGO_SEARCHES:
            raise RuntimeAdapterError(
                f"cudnn_conv_algo_search {self.cudnn_conv_algo_search!r} is not one of {', '.join(CONV_ALGO_SEARCHES)}")
        object.__setattr__(self, "cudnn_conv_algo_search", search)
        if self.device_id < 0:
            raise RuntimeAdapterError(f"device_id must be a CUDA device index (0, 1, ...), got {self.device_id}")
        if not self.openvino_device.strip():
            raise RuntimeAdapterError("openvino_device is empty; name an OpenVINO device such as CPU or GPU")
        object.__setattr__(self, "openvino_device", self.openvino_device.strip().upper())
        if self.on_fallback not in ON_FALLBACK:
            raise RuntimeAdapterError(f"on_fallback {self.on_fallback!r} is not one of {', '.join(ON_FALLBACK)}")


def _short_name(name: str) -> str:
    """`cuda` (or ORT's `CUDAExecutionProvider`) -> `cuda`; one error naming the choices otherwise."""
    key = name.strip().lower()
    by_ort_name = {ort.lower(): short for short, ort in PROVIDERS.items()}
    if key in PROVIDERS or key in by_ort_name:
        return by_ort_name.get(key, key)
    raise RuntimeAdapterError(f"onnxruntime provider {name!r} is not one of {', '.join(PROVIDERS)}")


def default_trt_cache_dir(settings: OrtOptions) -> Path:
    if settings.trt_cache_dir:
        return Path(settings.trt_cache_dir)
    root = os.environ.get("VIT_DEPLOY_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "vit-deploy") / "ort-tensorrt"


def provider_settings(settings: OrtOptions, precision: str,
                      threads: int | None = None) -> list[tuple[str, dict[str, str]]]:
    """(ORT provider name, its provider options) per requested provider, in priority order."""
    listed = []
    for name in settings.providers:
        options: dict[str, str] = {}
        if name == "cuda":
            options = {"device_id": str(settings.device_id), "cudnn_conv_algo_search": settings.cudnn_conv_algo_search}
        elif name == "tensorrt":
            options = {"device_id": str(settings.device_id), "trt_fp16_enable": str(settings.trt_fp16),
                       # A Q/DQ graph builds by explicit quantization, which takes the INT8 builder flag.
                       "trt_int8_enable": str(precision == "int8"),
                       "trt_engine_cache_enable": str(settings.trt_engine_cache)}
            if settings.trt_engine_cache:
                options["trt_engine_cache_path"] = str(default_trt_cache_dir(settings))
        elif name == "openvino":
            # ACCURACY keeps the graph's own precision (FP32 on a CPU, an fp16 graph's FP16 on a GPU); a GPU's
            # default would run an fp32 graph in FP16.
            options = {"device_type": settings.openvino_device, "precision": "ACCURACY"}
            if threads:
                options["num_of_threads"] = str(threads)
        listed.append((PROVIDERS[name], options))
    return listed


@dataclass(frozen=True)
class ProviderCheck:
    """What a session was asked to run on, what it runs on, and which asked-for providers it dropped."""

    requested: tuple[str, ...]  # ORT names, priority order
    active: tuple[str, ...]  # session.get_providers()
    available: tuple[str, ...]  # onnxruntime.get_available_providers()

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(name for name in self.requested if name not in self.active)

    def message(self) -> str | None:
        """None when every asked-for provider runs; else one line naming them and what ORT fell back to."""
        if not self.dropped:
            return None
        why = []
        for name in self.dropped:
            if name in self.available:
                why.append(f"{name} failed to start (ORT's log above says why: missing CUDA, cuDNN or TensorRT "
                           "libraries, or no such device)")
                continue
            short = next(s for s, ort in PROVIDERS.items() if ort == name)
            why.append(f"this onnxruntime build has no {name} (only {', '.join(self.available) or 'none'}; "
                       f"{PACKAGES[short]} brings it, replacing the onnxruntime wheel)")
        return (f"onnxruntime: asked for {', '.join(self.dropped)}, but the session falls back to "
                f"{', '.join(self.active) or CPU}: " + "; ".join(why))


def session_providers(requested: Sequence[tuple[str, dict[str, str]]],
                      available: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """What to hand ORT: the requested providers its build has (ORT would drop the others with a Python warning
    of its own; `ProviderCheck` reports them instead), the CPU provider last if nothing else is left."""
    present = [(name, options) for name, options in requested if name in available]
    return present or [(CPU, {})]


def check_providers(check: ProviderCheck, on_fallback: str) -> str | None:
    """Refuse a session that fell back (`on_fallback="error"`), or return the line to warn with."""
    message = check.message()
    if message and on_fallback == "error":
        raise EngineLoadError(f"{message}; --option on_fallback=warn runs it anyway")
    return message
