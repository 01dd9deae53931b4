"""OpenVINO's settings: the typed options, the device check, and the precision hint each precision pins.

- fp32: the runner pins `INFERENCE_PRECISION_HINT=f32`. Without the pin the CPU plugin runs bf16 on CPUs with
  AVX512-BF16/AMX, which costs ~1e-2 relative error (seen here).
- bf16: the same fp32 IR, run with `INFERENCE_PRECISION_HINT=bf16` (its own precision, not "fp32").
- fp16: inference precision is f16 where the device reports FP16 in `OPTIMIZATION_CAPABILITIES` (GPU, NPU, ARM
  CPUs); elsewhere f32, because an `f16` hint on an x86 CPU without FP16 silently becomes bf16 (seen here with
  2026.4).
- int8: layers NNCF leaves in float run at f32.

`runtime_config` is the `compile_model` properties these make, which the build details record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import BuildOptions, RuntimeAdapterError
from .options import RuntimeOptions, options_for

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Devices that are not in `core.available_devices` but dispatch to the ones that are.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
NNCF_MODEL_TYPES = ("transformer", "none")
OVERFLOW_FIXES = ("auto", "enable", "first_layer_only", "disable")

# The hint each precision pins; fp16 is decided per device in `inference_precision`.
_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


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
