"""The export stage: zoo model -> ONNX -> passes -> engine -> parity gate -> artifact folder.

Everything a later run needs is in the artifact folder; `manifest.json` says what is in it and how it
was made. The folder is assembled in a staging folder and only renamed into place when complete.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import models
import runtimes
from runtimes import BuildOptions, ModelSource, Runner, TensorSpec

from ..errors import DeployError, ParityError
from ..fileio import ensure_writable, write_json_atomic
from . import artifacts, onnx_export
from .accuracy import torch_reference
from .calibration import calibration_feeds, calibration_note
from .graph import prepare_onnx
from .manifest import manifest_head
from .onnx_cache import GraphKey, OnnxCache
from .request import EngineJob, ExportRequest, ExportResult
from .targets import get_target
from .verify import verify_engine

if TYPE_CHECKING:
    from torch import nn


def export(request: ExportRequest, onnx_cache: OnnxCache | None = None) -> ExportResult:
    """Run the whole stage; raises DeployError (or a zoo/runtime error) with a one-line reason."""
    spec = get_target(request.target)
    precision = request.precision or spec.default_precision
    if precision not in spec.precisions:
        raise DeployError(f"target {spec.name} cannot build {precision}; it supports {', '.join(spec.precisions)}")
    backend = runtimes.get_backend(spec.name)
    status = backend.require()
    info = models.get_model_info(request.model)
    out_root = ensure_writable(request.out)
    model = _seeded_model(info.name, request)
    # Engines get the BatchNorm-folded module; parity compares them with the unfolded original.
    deployable = _fold_batchnorm(model)
    source = ModelSource([TensorSpec(onnx_export.INPUT_NAME, ("batch", *info.input_size))],
                         [onnx_export.OUTPUT_NAME], module=deployable)
    manifest = manifest_head(request, info, model, spec.name, precision, status.version)
    manifest["model"]["batchnorm_folded"] = _folded_count(deployable)

    final = artifacts.artifact_dir(out_root, info.name, spec.name, precision)
    with tempfile.TemporaryDirectory(dir=out_root, prefix=".work-") as work, artifacts.staging(final) as stage:
        options = BuildOptions(precision=precision, batch=request.batch, threads=request.threads,
                               device=request.device, calibration=calibration_feeds(request, info, precision),
                               runtime=request.runtime_options)
        job = EngineJob(spec, precision, backend, options, source, torch_reference(model), request.seed)
        if backend.source_kind == "onnx":
            key = GraphKey(info.name, request.weights, request.use_ema, request.seed, request.opset or spec.opset or 0)
            graph = prepare_onnx(job, key, request, onnx_cache or OnnxCache(Path(work)), Path(work))
            source.onnx_path, manifest["onnx"] = graph.path, graph.details
        if options.calibration is not None:
            manifest["calibration"] = calibration_note(request, len(options.calibration))
        build = backend.build(source, stage, options)
        manifest["engine"] = {"files": list(build.files), "details": build.details,
                              "batches": list(build.batches) if build.batches else "dynamic"}
        manifest["inputs"] = [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.input_specs]
        manifest["outputs"] = [{"name": onnx_export.OUTPUT_NAME, "shape": ["batch", _num_classes(model)]}]
        manifest["parity"] = verify_engine(job, status, stage, build, request.batch)
        _publish(manifest, stage, final, request.gate)
    return ExportResult(final, manifest, model)


def _seeded_model(name: str, request: ExportRequest) -> nn.Module:
    import torch

    # Seeded so every export of a random-init model holds the same weights: targets share one cached ONNX
    # file, and each export's PyTorch reference must match the graph it is compared with.
    with torch.random.fork_rng():
        torch.manual_seed(request.seed)
        return models.create_model(name, weights=request.weights, use_ema=request.use_ema)


def _publish(manifest: dict[str, Any], stage: Path, final: Path, gate: bool) -> None:
    """Promote the staged folder; one that failed parity goes beside it as `.failed` and raises (when gated)."""
    passed = manifest["parity"].get("passed")
    manifest["status"] = "ok" if passed is not False else "failed"
    write_json_atomic(stage / artifacts.MANIFEST, manifest)
    if passed is False and gate:
        rejected = artifacts.promote(stage, final.with_name(final.name + ".failed"))
        model, target, precision = manifest["model"]["name"], manifest["target"], manifest["precision"]
        raise ParityError(f"{model} on {target} {precision} fails parity with PyTorch: "
                          f"{manifest['parity']['reason']} (engine kept for inspection in {rejected}, never loaded)")
    artifacts.promote(stage, final)


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    import torch

    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return model  # nothing to fold: skip the copy
    from models.fuse import fuse_batchnorm

    return fuse_batchnorm(model)


def _folded_count(model: nn.Module) -> int:
    from models.fuse import FUSED_COUNT_ATTR

    return int(getattr(model, FUSED_COUNT_ATTR, 0))


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def load_artifact(folder: Path, threads: int | None = None) -> tuple[Runner, dict[str, Any]]:
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
