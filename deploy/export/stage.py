"""The export stage: a model -> ONNX -> passes -> engine -> parity gate -> artifact folder.

It reads top to bottom as the pipeline, each step a function taking the previous step's immutable result:

    choose_target -> load the model -> plan_export -> engine_job -> prepare_graph -> build_engine
    -> verify_engine -> decide -> describe -> publish

Everything a later run needs is in the artifact folder; `manifest.json` says what is in it and how it was made.
The folder is assembled in a staging folder and only renamed into place when complete. A request is checked
before any work (target, precision, batches, opset, passes, free space); a full disk while writing is one
line, whatever the runtime raised.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import runtimes
from models import LoadedModel, ModelRequest, load_model
from models.fuse import FUSED_COUNT_ATTR, folded
from runtimes import Availability, Backend, BuildOptions, BuildResult, ModelSource, Runner, TensorSpec

from ..data.datasets import load_dataset
from ..errors import DeployError, ParityError
from ..fileio import ensure_writable
from ..passes.quantize import Calibration
from . import artifacts, limits, onnx_export
from .accuracy import torch_reference
from .calibration import calibration_feeds, calibration_note
from .gate import Verdict, decide
from .graph import prepare_onnx
from .manifest import (
    MANIFEST_SCHEMA,
    EngineRecord,
    Manifest,
    OnnxRecord,
    ParityRecord,
    TensorRecord,
    model_record,
    now,
    versions,
    weights_record,
)
from .node_map import MODULE_MACS, write_module_macs, write_node_map
from .onnx_cache import GraphKey, OnnxCache
from .parity import LOW_PRECISIONS
from .request import EngineJob, ExportRequest, ExportResult
from .targets import TargetSpec, get_target
from .verify import verify_engine

log = logging.getLogger("deploy")


def export(request: ExportRequest, onnx_cache: OnnxCache | None = None) -> ExportResult:
    """Run the whole stage; raises DeployError (or a zoo/runtime error) with a one-line reason, ParityError when
    the gate refuses the engine."""
    target = choose_target(request)
    sized = limits.check_zoo_fit(request.model_request, request.batch)  # a zoo variant's fit needs no model built
    loaded = request.model if isinstance(request.model, LoadedModel) else load_model(request.model_request)
    plan = plan_export(request, target, loaded, sized)
    with _workspace(plan) as (work, stage):
        job = engine_job(plan, loaded)
        graph = prepare_graph(plan, job, onnx_cache or OnnxCache(work), work, stage)
        engine = build_engine(job, graph, stage)
        measured = verify_engine(job.with_source(graph.source), target.availability, stage, engine, request.batch)
        parity, verdict = decide(measured, job, gated=request.gated)
        manifest = describe(plan, loaded, job, graph, engine, parity, verdict, stage)
        published = publish(manifest, stage, plan.final, verdict)
    return ExportResult(published, manifest, loaded, verdict)


@dataclass(frozen=True)
class TargetChoice:
    """The target the request names, the precision it builds, its runtime adapter and what this machine has."""

    spec: TargetSpec
    precision: str
    backend: Backend
    availability: Availability


def choose_target(request: ExportRequest) -> TargetChoice:
    """The target and precision, checked with everything else that needs no model: opset, passes, counts."""
    spec = get_target(request.target)
    precision = request.precision or spec.default_precision
    if precision not in spec.precisions:
        raise DeployError(f"target {spec.name} cannot build {precision}; it supports {', '.join(spec.precisions)}")
    limits.check_batch_sizes(request.batch)
    limits.check_counts(request)
    limits.check_opset(request.opset, spec.name, spec.opset)
    limits.check_passes(spec, request.passes, precision)
    backend = runtimes.get_backend(spec.name)
    return TargetChoice(spec, precision, backend, backend.require())


@dataclass(frozen=True)
class ExportPlan:
    request: ExportRequest
    target: TargetChoice
    out_root: Path
    final: Path  # the artifact folder this export publishes


def plan_export(request: ExportRequest, target: TargetChoice, model: LoadedModel, sized: bool = False) -> ExportPlan:
    """Where the artifact goes, once the model is known to fit: its batches in memory (`sized`: checked
    already), its files on disk."""
    card = model.card
    if not sized:
        limits.check_batches_fit(request.batch, limits.activation_bytes(model.module, card.input_size), card.name)
    out_root = ensure_writable(request.out)
    swept = artifacts.sweep(out_root)
    if swept.folders:
        log.info("removed %d folder(s) left by killed runs in %s, freeing %.0f MB", swept.folders, out_root,
                 swept.bytes / 2**20)
    limits.check_free_space(out_root, card.params * 4 * 3 + (16 << 20), f"{card.name} on {target.spec.name}")
    final = artifacts.artifact_dir(out_root, card.name, target.spec.name, target.precision)
    return ExportPlan(request, target, out_root, final)


@contextmanager
def _workspace(plan: ExportPlan) -> Iterator[tuple[Path, Path]]:
    """A work folder and the artifact's staging folder, both hidden beside the output, both removed on failure."""
    with tempfile.TemporaryDirectory(dir=plan.out_root, prefix=artifacts.owned_prefix("work")) as work, \
            artifacts.staging(plan.final) as stage, _disk_full_is_one_line(plan.out_root):
        yield Path(work), stage


def engine_job(plan: ExportPlan, model: LoadedModel) -> EngineJob:
    """What building and checking the engine needs: the deployable module, its IO, options, references."""
    request, target, card = plan.request, plan.target, model.card
    # Engines get the BatchNorm-folded module; parity compares them with the unfolded original.
    deployable = folded(model.module)
    source = ModelSource([TensorSpec(onnx_export.INPUT_NAME, ("batch", *card.input_size))],
                         [onnx_export.OUTPUT_NAME], module=deployable)
    feeds = calibration_feeds(request, card, target.precision)
    options = BuildOptions(precision=target.precision, batch=request.batch, threads=request.threads,
                           device=request.runtime_device, calibration=feeds, runtime=request.runtime_options)
    labelled = (load_dataset(card.reference_dataset, card.preprocessing)
                if card.reference_dataset and target.precision in LOW_PRECISIONS else None)
    return EngineJob(target.spec, target.precision, target.backend, options, source, torch_reference(model.module),
                     request.seed, Calibration(feeds, request.calib_method) if feeds else None,  # type: ignore[arg-type]
                     labelled, model_name=card.name)


@dataclass(frozen=True)
class PreparedGraph:
    """What the engine is built from: the module, and for an ONNX target the rewritten file and its record."""

    source: ModelSource
    record: OnnxRecord | None = None


def prepare_graph(plan: ExportPlan, job: EngineJob, cache: OnnxCache, work: Path, stage: Path) -> PreparedGraph:
    """The rewritten ONNX graph for an ONNX target (with its node map in the artifact); the module for the others."""
    if job.backend.source_kind != "onnx":
        return PreparedGraph(job.source)
    request = plan.request
    opset = request.opset or job.target.opset or 0
    key = GraphKey(job.model_name, model_identity(request.model_request), opset)
    graph = prepare_onnx(job, key, request.passes, request.autotune, cache, work)
    # Engines other than ORT's keep neither node names nor scopes: profiles read them from here.
    node_map = write_node_map(graph.path, stage)
    record = replace(graph.details, node_map=node_map, node_map_sha256=artifacts.file_sha256(stage / node_map))
    return PreparedGraph(replace(job.source, onnx_path=graph.path), record)


def model_identity(request: ModelRequest) -> str:
    """What a clean export depends on besides the opset: everything the model was asked to be (a module given
    in-process by its identity: it lives as long as the cache)."""
    described = repr(replace(request, module=None))
    if request.module is not None:
        described += f"|module {id(request.module)}"
    return hashlib.sha1(described.encode()).hexdigest()[:16]


def build_engine(job: EngineJob, graph: PreparedGraph, stage: Path) -> BuildResult:
    """The runtime adapter's build into the staging folder, and the table of module MACs profiles read."""
    build = job.backend.build(graph.source, stage, job.options)
    write_module_macs(job.source.module, job.input_size, stage)
    return build


def describe(plan: ExportPlan, model: LoadedModel, job: EngineJob, graph: PreparedGraph, build: BuildResult,  # noqa: PLR0913
             parity: ParityRecord, verdict: Verdict, stage: Path) -> Manifest:
    """The artifact's manifest, whole: model, weights, target, versions, engine, IO, passes, parity, verdict."""
    request, target = plan.request, plan.target
    engine = EngineRecord(files=list(build.files), details=build.details,
                          batches=list(build.batches) if build.batches else "dynamic",
                          sha256=artifacts.engine_hashes(stage, build.files),
                          options=(job.options.runtime or job.backend.options_type()).to_json(),
                          can_run_here=None if build.can_run_here else False)
    calibration = (calibration_note(request, model.card, len(job.options.calibration),
                                    onnx_graph=job.backend.source_kind == "onnx") if job.options.calibration else None)
    return Manifest(
        schema=MANIFEST_SCHEMA, created=now(),
        model=model_record(model, int(getattr(job.source.module, FUSED_COUNT_ATTR, 0))),
        weights=weights_record(model), target=target.spec.name, precision=target.precision,
        versions=versions(target.spec.name, target.availability.version), engine=engine,
        inputs=[TensorRecord(s.name, list(s.shape), s.dtype) for s in job.source.input_specs],
        outputs=[TensorRecord(onnx_export.OUTPUT_NAME, ["batch", model.card.num_classes])],
        parity=parity, status=verdict.status, onnx=graph.record, calibration=calibration,
        files={MODULE_MACS: artifacts.file_sha256(stage / MODULE_MACS)})


def publish(manifest: Manifest, stage: Path, final: Path, verdict: Verdict) -> Path:
    """Promote the staged folder; an engine the gate refused goes beside it as `.failed` and raises."""
    artifacts.write_manifest(stage, manifest)
    if not verdict.publish:
        rejected = artifacts.promote(stage, final.with_name(final.name + ".failed"))
        raise ParityError(f"{manifest.model.name} on {manifest.target} {manifest.precision} fails parity with "
                          f"PyTorch: {verdict.reason} (engine kept for inspection in {rejected}, never loaded)")
    return artifacts.promote(stage, final)


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


def load_artifact(folder: Path, threads: int | None = None,
                  options: Mapping[str, object] | None = None) -> tuple[Runner, Manifest]:
    """Open a finished artifact folder as a Runner, with the runtime options it was built with (`options`
    overriding some); refuses folders that failed parity, are partial or changed."""
    manifest = artifacts.read_manifest(folder)
    if manifest.status == "failed":
        raise DeployError(f"{folder} holds an engine that failed parity; re-export it")
    artifacts.verify_files(Path(folder), manifest)
    backend = runtimes.get_backend(manifest.target)
    backend.require()
    specs = [TensorSpec(i.name, tuple(i.shape), i.dtype) for i in manifest.inputs]
    settings = backend.parse_options({**manifest.engine.options, **(options or {})})
    build_options = BuildOptions(precision=manifest.precision, threads=threads, runtime=settings)
    return backend.load(Path(folder), manifest.engine.files[0], build_options, specs,
                        [o.name for o in manifest.outputs]), manifest
