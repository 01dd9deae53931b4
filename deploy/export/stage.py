"""The export stage: zoo model -> ONNX -> passes -> engine -> parity gate -> artifact folder.

Everything a later run needs is in the artifact folder; `manifest.json` says what is in it and how it
was made. The folder is assembled in a staging folder and only renamed into place when complete. A
request is checked before any work (target, precision, batches, opset, free space); a full disk while
writing is one line, whatever the runtime raised.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import models
import runtimes
from runtimes import Availability, Backend, BuildOptions, BuildResult, ModelSource, Runner, TensorSpec

from ..data.datasets import load_dataset
from ..diagnose.nodes import write_node_map
from ..errors import DeployError, ParityError
from ..fileio import ensure_writable
from ..passes.quantize import Calibration
from . import artifacts, limits, onnx_export
from .accuracy import torch_reference
from .calibration import calibration_feeds, calibration_note
from .graph import prepare_onnx
from .manifest import (
    MANIFEST_SCHEMA,
    EngineRecord,
    Manifest,
    Status,
    TensorRecord,
    model_record,
    now,
    versions,
    weights_record,
)
from .onnx_cache import GraphKey, OnnxCache
from .parity import LOW_PRECISIONS
from .request import EngineJob, ExportRequest, ExportResult
from .targets import TargetSpec, get_target
from .verify import verify_engine

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("deploy")


def export(request: ExportRequest, onnx_cache: OnnxCache | None = None) -> ExportResult:
    """Run the whole stage; raises DeployError (or a zoo/runtime error) with a one-line reason."""
    spec, precision, backend, status = _target(request)
    info = models.get_model_info(request.model)
    limits.check_batches(request.batch, info.name)
    limits.check_counts(request)
    limits.check_opset(request.opset, spec.name, spec.opset)
    limits.check_passes(spec, request.passes, precision)
    out_root = ensure_writable(request.out)
    swept = artifacts.sweep(out_root)
    if swept.folders:
        log.info("removed %d folder(s) left by killed runs in %s, freeing %.0f MB", swept.folders, out_root,
                 swept.bytes / 2**20)
    limits.check_free_space(out_root, int(info.params_m * 1e6 * 4 * 3) + (16 << 20), f"{info.name} on {spec.name}")
    model = seeded_model(info.name, request)
    # Engines get the BatchNorm-folded module; parity compares them with the unfolded original.
    deployable = fold_batchnorm(model)
    source = ModelSource([TensorSpec(onnx_export.INPUT_NAME, ("batch", *info.input_size))],
                         [onnx_export.OUTPUT_NAME], module=deployable)
    final = artifacts.artifact_dir(out_root, info.name, spec.name, precision)
    with tempfile.TemporaryDirectory(dir=out_root, prefix=artifacts.owned_prefix("work")) as work, \
            artifacts.staging(final) as stage, _disk_full_is_one_line(out_root):
        options = BuildOptions(precision=precision, batch=request.batch, threads=request.threads,
                               device=request.device, calibration=calibration_feeds(request, info, precision),
                               runtime=request.runtime_options)
        calibration = (Calibration(options.calibration, request.calib_method)  # type: ignore[arg-type]
                       if options.calibration else None)
        labelled = (load_dataset(info.reference_dataset, info)
                    if info.reference_dataset and precision in LOW_PRECISIONS else None)
        job = EngineJob(spec, precision, backend, options, source, torch_reference(model), request.seed,
                        calibration, labelled)
        onnx_record = None
        if backend.source_kind == "onnx":
            key = GraphKey(info.name, request.weights, request.use_ema, request.seed, request.opset or spec.opset or 0)
            graph = prepare_onnx(job, key, request, onnx_cache or OnnxCache(Path(work)), Path(work))
            source.onnx_path, onnx_record = graph.path, graph.details
            # Engines other than ORT's keep neither node names nor scopes: profiles read them from here.
            node_map = write_node_map(graph.path, stage)
            onnx_record = replace(onnx_record, node_map=node_map,
                                  node_map_sha256=artifacts.file_sha256(stage / node_map))
        build = backend.build(source, stage, options)
        manifest = _manifest(request, model, job, status, build, stage)
        manifest.onnx = onnx_record
        if options.calibration is not None:
            manifest.calibration = calibration_note(request, info, len(options.calibration),
                                                      onnx_graph=backend.source_kind == "onnx")
        _publish(manifest, stage, final, request.gate)
    return ExportResult(final, manifest, model)


def _target(request: ExportRequest) -> tuple[TargetSpec, str, Backend, Availability]:
    spec = get_target(request.target)
    precision = request.precision or spec.default_precision
    if precision not in spec.precisions:
        raise DeployError(f"target {spec.name} cannot build {precision}; it supports {', '.join(spec.precisions)}")
    backend = runtimes.get_backend(spec.name)
    return spec, precision, backend, backend.require()


def _manifest(request: ExportRequest, model: nn.Module, job: EngineJob, status: Availability, build: BuildResult,
              stage: Path) -> Manifest:
    info = models.get_model_info(request.model)
    parity = verify_engine(job, status, stage, build, request.batch)
    state: Status = "unverified" if parity.passed is None else "ok" if parity.passed else "failed"
    engine = EngineRecord(files=list(build.files), details=build.details,
                          batches=list(build.batches) if build.batches else "dynamic",
                          sha256=artifacts.engine_hashes(stage, build.files))
    inputs = [TensorRecord(s.name, list(s.shape), s.dtype) for s in job.source.input_specs]
    outputs = [TensorRecord(onnx_export.OUTPUT_NAME, ["batch", _num_classes(model)])]
    return Manifest(schema=MANIFEST_SCHEMA, created=now(), model=model_record(info, model, _folded_count(job)),
                    weights=weights_record(model, request), target=job.target.name, precision=job.precision,
                    versions=versions(job.target.name, status.version), engine=engine, inputs=inputs,
                    outputs=outputs, parity=parity, status=state)


@contextmanager
def _disk_full_is_one_line(out: Path) -> Iterator[None]:
    """A full disk while building or writing, whatever raised it (OSError, a runtime's own error), as one line."""
    try:
        yield
    except Exception as exc:
        # An OSError, or fileio's WriteError (which keeps its errno), or a runtime's own error saying so.
        full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc)
        if not full:
            raise
        raise DeployError(f"no space left on the device holding {out} while writing the artifact; "
                          "free some space or pass another --out (nothing was published)") from None


def seeded_model(name: str, request: ExportRequest) -> nn.Module:
    import torch

    # Seeded so every export of a random-init model holds the same weights: targets share one cached ONNX
    # file, and each export's PyTorch reference must match the graph it is compared with.
    with torch.random.fork_rng():
        torch.manual_seed(request.seed)
        return models.create_model(name, weights=request.weights, use_ema=request.use_ema)


def _publish(manifest: Manifest, stage: Path, final: Path, gate: bool) -> None:
    """Promote the staged folder; one that failed parity goes beside it as `.failed` and raises (when gated)."""
    artifacts.write_manifest(stage, manifest)
    if manifest.status == "failed" and gate:
        rejected = artifacts.promote(stage, final.with_name(final.name + ".failed"))
        raise ParityError(f"{manifest.model.name} on {manifest.target} {manifest.precision} fails parity with "
                          f"PyTorch: {manifest.parity.reason} (engine kept for inspection in {rejected}, never loaded)")
    artifacts.promote(stage, final)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    import torch

    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return model  # nothing to fold: skip the copy
    from models.fuse import fuse_batchnorm

    return fuse_batchnorm(model)


def _folded_count(job: EngineJob) -> int:
    from models.fuse import FUSED_COUNT_ATTR

    return int(getattr(job.source.module, FUSED_COUNT_ATTR, 0))


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def load_artifact(folder: Path, threads: int | None = None) -> tuple[Runner, Manifest]:
    """Open a finished artifact folder as a Runner; refuses folders that failed parity, are partial or changed."""
    manifest = artifacts.read_manifest(folder)
    if manifest.status == "failed":
        raise ParityError(f"{folder} holds an engine that failed parity; re-export it")
    artifacts.verify_files(Path(folder), manifest)
    backend = runtimes.get_backend(manifest.target)
    backend.require()
    specs = [TensorSpec(i.name, tuple(i.shape), i.dtype) for i in manifest.inputs]
    options = BuildOptions(precision=manifest.precision, threads=threads)
    return backend.load(Path(folder), manifest.engine.files[0], options, specs,
                        [o.name for o in manifest.outputs]), manifest
