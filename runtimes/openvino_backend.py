"""OpenVINO backend: ONNX -> OpenVINO IR (`model.xml` + `model.bin`), run with the OpenVINO runtime.

Weights per precision: fp32 for fp32, bf16 and int8 before quantization; fp16-compressed for fp16
(`save_model(compress_to_fp16=True)`); int8 is post-training quantization with NNCF on the calibration feeds.
What each precision runs at on the device is `openvino_options.inference_precision`'s to say; the settings
are saved beside the IR (`openvino_config.json`) and applied again at load; `openvino_runner` runs and profiles.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from .openvino_options import OpenVINOOptions, check_device, inference_precision, runtime_config
from .openvino_runner import OpenVINORunner, one_line
from .options import options_for

CONFIG_FILE = "openvino_config.json"


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
