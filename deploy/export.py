"""The export stage: zoo model -> ONNX -> passes -> engine -> parity gate -> artifact folder.

Everything a later run needs is in the artifact folder; `manifest.json` says what is in it and how it
was made. The folder is assembled in a staging folder and only renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
import runtimes
from models.complexity import count_params
from models.fuse import FUSED_COUNT_ATTR
from runtimes import BuildOptions, ModelSource, TensorSpec

from . import artifacts, onnx_export
from .accuracy import torch_reference
from .autotune import AutotuneSettings, select_passes
from .data.images import load_images, seeded_batch
from .errors import DeployError, ParityError
from .parity import TOLERANCES, compare, summarise
from .passes import run_passes
from .targets import get_target, resolve_passes


@dataclass
class ExportRequest:
    model: str
    target: str = "onnxruntime"
    precision: str | None = None  # None: the target's default
    weights: str | None = None
    use_ema: bool | None = None
    out: Path = Path("artifacts")
    passes: str | None = "default"  # default | none | auto | a,b | +a,-b
    autotune: AutotuneSettings | None = None  # --passes auto's timing budget (None: defaults, DEPLOY_AUTO_*)
    opset: int | None = None
    batch: tuple[int, ...] = (1, 4)  # dynamic-batch range the engine must serve; parity runs at each
    threads: int | None = None
    device: str | None = None
    seed: int = 0
    calib_dir: Path | None = None
    calib_samples: int = 64
    gate: bool = True  # False: keep an engine that fails parity (still recorded as failed)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    artifact_dir: Path
    manifest: dict[str, Any]
    model: torch.nn.Module


def export(request: ExportRequest, onnx_cache: dict | None = None) -> ExportResult:
    """Run the whole stage; raises DeployError (or a zoo/runtime error) with a one-line reason."""
    profile = get_target(request.target)
    precision = request.precision or profile.default_precision
    if precision not in profile.precisions:
        raise DeployError(f"target {profile.name} cannot build {precision}; it supports "
                          f"{', '.join(profile.precisions)}")
    backend = runtimes.get_backend(profile.name)
    status = backend.require()
    info = models.get_model_info(request.model)
    out_root = artifacts.ensure_writable(request.out)

    # Seeded so every export of a random-init model holds the same weights: targets share one cached ONNX
    # file, and each export's PyTorch reference must match the graph it is compared with.
    with torch.random.fork_rng():
        torch.manual_seed(request.seed)
        model = models.create_model(info.name, weights=request.weights, use_ema=request.use_ema)
    # Engines get the BatchNorm-folded module; parity compares them with the unfolded original.
    deployable = _fold_batchnorm(model)
    input_specs = [TensorSpec(onnx_export.INPUT_NAME, ("batch", *info.input_size))]
    source = ModelSource(input_specs, [onnx_export.OUTPUT_NAME], module=deployable)
    manifest: dict[str, Any] = _manifest_head(request, info, model, profile.name, precision, status)
    manifest["model"]["batchnorm_folded"] = getattr(deployable, FUSED_COUNT_ATTR, 0)

    final = artifacts.artifact_dir(out_root, info.name, profile.name, precision)
    with tempfile.TemporaryDirectory(dir=out_root, prefix=".work-") as work, artifacts.staging(final) as stage:
        options = BuildOptions(
            precision=precision, batch=request.batch, threads=request.threads, device=request.device,
            calibration=_calibration(request, info, precision), extra=dict(request.extra),
        )
        if backend.source_kind == "onnx":
            def tune(proto):  # --passes auto: build, gate and time the profile's candidates here
                return select_passes(proto, profile, precision, backend, options, input_specs[0],
                                     onnx_export.OUTPUT_NAME, torch_reference(model), Path(work) / "auto",
                                     request.autotune, request.seed)

            source.onnx_path, manifest["onnx"] = _prepare_onnx(
                deployable, info, request, profile, Path(work), onnx_cache, precision, tune)
        if options.calibration is not None:
            manifest["calibration"] = _calibration_note(request, len(options.calibration))
        build = backend.build(source, stage, options)
        manifest["engine"] = {"files": list(build.files), "details": build.details,
                              "batches": list(build.batches) if build.batches else "dynamic"}
        manifest["inputs"] = [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in input_specs]
        manifest["outputs"] = [{"name": onnx_export.OUTPUT_NAME, "shape": ["batch", _num_classes(model)]}]
        manifest["parity"] = _parity(backend, status, stage, build, options, source, model,
                                     precision, request)
        passed = manifest["parity"].get("passed")
        manifest["status"] = "ok" if passed is not False else "failed"
        artifacts.write_json_atomic(stage / artifacts.MANIFEST, manifest)
        if passed is False and request.gate:
            rejected = artifacts.promote(stage, final.with_name(final.name + ".failed"))
            raise ParityError(
                f"{info.name} on {profile.name} {precision} fails parity with PyTorch: "
                f"{manifest['parity']['reason']} (engine kept for inspection in {rejected}, never loaded)"
            )
        artifacts.promote(stage, final)
    return ExportResult(final, manifest, model)


def _fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return model  # nothing to fold: skip the copy
    from models.fuse import fuse_batchnorm

    return fuse_batchnorm(model)


def _manifest_head(request, info, model, target, precision, status) -> dict[str, Any]:
    weights = model.weights_info
    return {
        "schema": artifacts.MANIFEST_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": info.name, "family": info.family, "config": info.config,
            "input_size": list(info.input_size), "mean": list(info.mean), "std": list(info.std),
            "interpolation": info.interpolation, "crop_pct": info.crop_pct,
            "params": count_params(model), "macs_g": info.macs_g,
        },
        "weights": (
            {"source": "file", "path": weights.path, "sha256": weights.sha256,
             "container_key": weights.container_key}
            if weights else {"source": "random-init", "seed": request.seed,
                             "note": "no --weights given: outputs are meaningless"}
        ),
        "target": target,
        "precision": precision,
        "versions": _versions(target, status.version),
    }


def _versions(target: str, runtime_version: str | None) -> dict[str, str | None]:
    import onnx
    import onnxscript

    return {
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__, "numpy": np.__version__, target: runtime_version,
    }


def _prepare_onnx(model, info, request, profile, work: Path, cache: dict | None, precision: str = "fp32",
                  tune=None):
    # A lone export still caches within itself: `auto` tunes on the same clean export that it then rewrites.
    cache = {} if cache is None else cache
    opset = request.opset or profile.opset
    base_key = (info.name, request.weights, request.use_ema, request.seed, opset)
    auto = None
    if request.passes == "auto":
        auto_key = ("auto", *base_key, profile.name, precision)
        auto = cache.get(auto_key)
        if auto is None:
            auto = cache[auto_key] = tune(_exported(model, info, opset, base_key, cache))
        pass_names = list(auto["passes"])
    else:
        pass_names = resolve_passes(profile, request.passes)
    # Precisions whose graph the export stage converts itself (fp16 with fp32 islands) append their pass.
    pass_names += [name for name in profile.precision_passes.get(precision, ()) if name not in pass_names]
    key = (*base_key, tuple(pass_names))
    if key in cache:
        path, details = cache[key]
        return path, ({**details, "auto": auto} if auto else details)
    proto, records = run_passes(_exported(model, info, opset, base_key, cache), pass_names)
    onnx_export.check(proto)
    # A bench run shares one cache folder across targets; a lone export works in its own temp folder.
    folder = Path(cache["dir"]) if "dir" in cache else work
    path = folder / f"{info.name}-opset{opset}-{hashlib.sha1(repr(key).encode()).hexdigest()[:10]}.onnx"
    sha = onnx_export.save_onnx(proto, path)
    details = {
        "exporter": "torch.onnx.export(dynamo=True) + onnxslim", "opset": onnx_export.opset_of(proto),
        "sha256": sha, "passes": [r.to_json() for r in records],
        "op_histogram": onnx_export.op_histogram(proto),
    }
    cache[key] = (path, details)
    return path, ({**details, "auto": auto} if auto else details)


def _exported(model, info, opset: int, base_key: tuple, cache: dict):
    """The cleaned-up export before any pass, shared by every pass list (and `auto`'s candidates)."""
    key = ("clean", *base_key)
    if key not in cache:
        cache[key] = onnx_export.clean_up(onnx_export.export_onnx(model, info.input_size, opset))
    return cache[key]


def _calibration(request: ExportRequest, info, precision: str) -> list[dict[str, np.ndarray]] | None:
    if precision != "int8":
        return None
    if request.calib_dir:
        images = load_images(request.calib_dir, info, request.calib_samples)
    else:
        images = seeded_batch(info.input_size, request.calib_samples, request.seed + 1000)
    return [{onnx_export.INPUT_NAME: image[None]} for image in images]


def _calibration_note(request: ExportRequest, count: int) -> dict[str, Any]:
    if request.calib_dir:
        return {"source": str(request.calib_dir), "samples": count}
    return {"source": "random", "samples": count,
            "warning": "calibrated on random inputs (no --calib-dir): int8 ranges are not representative"}


def _num_classes(model) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def _parity(backend, status, stage, build, options, source, model, precision, request) -> dict:
    tolerance = TOLERANCES[precision]
    record: dict[str, Any] = {"tolerance": {"max_abs_rel": tolerance.max_abs_rel,
                                            "min_cosine": tolerance.min_cosine},
                              "inputs": f"standard normal, seed {request.seed}"}
    if not status.can_run:
        record.update(passed=None, skipped=f"{backend.name} cannot run here: {status.reason}")
        return record
    reports = []
    # A static-shape engine is checked at the batches it serves; a dynamic one at every requested batch.
    batches = sorted(set(build.batches or request.batch))
    reference = torch_reference(model)
    with backend.load(stage, build.files[0], options, source.input_specs, source.output_names) as runner:
        for batch in batches:
            x = seeded_batch(tuple(source.input_specs[0].shape[1:]), batch, request.seed + batch)
            outputs = runner.infer({source.input_specs[0].name: x})
            reports.append(compare(reference(x), outputs[source.output_names[0]], tolerance))
    record.update(summarise(reports))
    return record


def load_artifact(folder: Path, threads: int | None = None):
    """Open a finished artifact folder as a Runner; refuses folders that failed parity or are partial."""
    manifest = artifacts.read_manifest(folder)
    if manifest.get("status") != "ok":
        raise DeployError(f"{folder} holds an engine that failed parity; re-export it")
    backend = runtimes.get_backend(manifest["target"])
    backend.require()
    specs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in manifest["inputs"]]
    options = BuildOptions(precision=manifest["precision"], threads=threads)
    return backend.load(Path(folder), manifest["engine"]["files"][0], options, specs,
                        [o["name"] for o in manifest["outputs"]]), manifest
