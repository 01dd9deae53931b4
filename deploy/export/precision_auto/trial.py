"""Building and gating one `--precision auto` candidate exactly as the export stage builds and gates an engine.

A candidate's graph is the export stage's (`graph.prepare_onnx`, with the recipe's precision pass and calibration)
for an ONNX target, the module for the others; its engine is the adapter's `build`; its gate is `verify_engine`
then `gate.decide` with the request's goal on the labelled images. The one difference: without labelled images an
int8 engine, which the stage records ungated on seeded inputs, is held here to its seeded cosine floor
(`parity.TOLERANCES`), since auto has to decide on something.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

import runtimes
from runtimes import AccuracyTarget, Availability, BuildResult, FloatLayers, Runner
from runtimes.base import first_line
from runtimes.options import RuntimeOptions

from ...errors import DeployError
from ...passes.quantize import Calibration, layer_nodes
from ..gate import RECORDED_ONLY, decide
from ..graph import prepare_onnx
from ..verify import verify_engine
from .candidates import QDQ_TARGETS, Recipe

if TYPE_CHECKING:
    from ...data.datasets import LabeledSet
    from ..autotune import AutotuneSettings
    from ..manifest import ParityRecord
    from ..onnx_cache import GraphKey, OnnxCache, SavedGraph
    from ..request import EngineJob, ExportRequest


@dataclass(frozen=True)
class SearchContext:
    """What every candidate of one search shares."""

    request: ExportRequest
    job: EngineJob  # fp32, with the goal and its labelled images (None: no labelled images)
    availability: Availability
    cache: OnnxCache
    work: Path
    settings: AutotuneSettings
    key: GraphKey | None = None  # an ONNX target's clean export
    feeds: list[dict[str, np.ndarray]] | None = None  # int8 calibration samples
    reference: np.ndarray | None = None  # PyTorch fp32's logits on the labelled images

    @property
    def labelled(self) -> LabeledSet | None:
        return self.job.labelled

    @property
    def target(self) -> str:
        return self.job.target.name


@dataclass(frozen=True)
class Trial:
    """A candidate built and gated (or why not): what the search times, compares and may publish."""

    recipe: Recipe
    job: EngineJob
    folder: Path
    build: BuildResult | None = None
    graph: SavedGraph | None = None
    parity: ParityRecord | None = None  # judged, as the stage judges
    passed: bool = False
    reason: str = ""  # why it failed the gate, or what went wrong
    error: bool = False  # did not build, load or run
    build_s: float = 0.0

    @property
    def runnable(self) -> bool:
        return self.build is not None and not self.error

    def runner(self) -> Runner:
        assert self.build is not None
        source = self.job.source
        return self.job.backend.load(self.folder, self.build.files[0], self.job.options, source.input_specs,
                                     source.output_names)


def candidate_job(context: SearchContext, recipe: Recipe) -> EngineJob:
    """The export stage's engine job, at the recipe's precision and with its int8 settings."""
    base, int8 = context.job, recipe.precision == "int8"
    if int8 and not context.feeds:
        raise DeployError("int8 needs calibration samples")
    options = replace(base.options, precision=recipe.precision, calibration=context.feeds if int8 else None,
                      runtime=_runtime_options(base, recipe), keep_float=None,
                      accuracy_target=_accuracy_target(context) if recipe.kind == "accuracy-control" else None)
    calibration = (Calibration(context.feeds, recipe.method or "minmax", keep_float=recipe.keep_float)  # type: ignore[arg-type]
                   if int8 and context.target in QDQ_TARGETS else None)
    return replace(base, precision=recipe.precision, options=options, calibration=calibration)


def _runtime_options(job: EngineJob, recipe: Recipe) -> RuntimeOptions | None:
    if recipe.smooth_quant is None:
        return job.options.runtime
    current = job.options.runtime
    if current is None or type(current) is RuntimeOptions:
        current = job.backend.options_type()
    return dataclasses.replace(current, smooth_quant=recipe.smooth_quant)  # type: ignore[call-arg]


def _accuracy_target(context: SearchContext) -> AccuracyTarget:
    """NNCF's accuracy control aims at the goal: the top-1 drop against the labels, or against PyTorch's top-1."""
    labelled, goal = context.labelled, context.job.goal
    assert labelled is not None and context.reference is not None
    if goal.max_drop is not None:
        return AccuracyTarget(labelled.images, labelled.labels, goal.max_drop)
    return AccuracyTarget(labelled.images, context.reference.argmax(-1), goal.tolerance)


def build_trial(context: SearchContext, recipe: Recipe, index: int) -> Trial:
    """Build the candidate into its own folder and gate it; a failure is an outcome, never raised."""
    job = candidate_job(context, recipe)
    folder = context.work / f"precision-{index}"
    folder.mkdir(parents=True)
    started = time.perf_counter()
    graph = None
    try:
        source = job.source
        if job.backend.source_kind == "onnx":
            assert context.key is not None
            request = context.request
            graph = prepare_onnx(job, context.key, request.passes, request.autotune, context.cache, context.work)
            source = replace(source, onnx_path=graph.path)
            if recipe.keep_float and context.target not in QDQ_TARGETS:  # OpenVINO names its float layers by node
                nodes = layer_nodes(onnx.load(str(graph.path), load_external_data=False), recipe.keep_float)
                job = replace(job, options=replace(job.options, keep_float=FloatLayers(recipe.keep_float,
                                                                                       tuple(nodes))))
        elif recipe.keep_float:
            job = replace(job, options=replace(job.options, keep_float=FloatLayers(recipe.keep_float)))
        job = job.with_source(source)
        build = job.backend.build(source, folder, job.options)
    except (DeployError, runtimes.RuntimeAdapterError) as exc:
        return Trial(recipe, job, folder, graph=graph, reason=str(exc), error=True,
                     build_s=time.perf_counter() - started)
    except Exception as exc:  # a runtime's own error while building one candidate: the others go on
        return Trial(recipe, job, folder, graph=graph, reason=f"{type(exc).__name__}: {first_line(exc)}",
                     error=True, build_s=time.perf_counter() - started)
    built = time.perf_counter() - started
    try:
        measured = verify_engine(job, context.availability, folder, build, context.request.batch)
    except Exception as exc:  # loads or runs badly here (an fp16 kernel this CPU lacks): an outcome
        return Trial(recipe, job, folder, build, graph, reason=f"cannot run here: {first_line(exc)}", error=True,
                     build_s=built)
    if measured.skipped:
        return Trial(recipe, job, folder, build, graph, reason=measured.skipped, error=True, build_s=built)
    record, _ = decide(measured, job)
    passed, reason = bool(record.passed), record.reason or ""
    if record.gate == RECORDED_ONLY:  # int8 without labelled images: its seeded cosine floor decides
        passed, reason = bool(measured.passed), measured.reason or ""
    return Trial(recipe, job, folder, build, graph, record, passed, _short(reason), build_s=built)


def _short(reason: str) -> str:
    """The gate's reason without the debug-precision hint (auto handles the layers itself)."""
    return reason.split("; find the layer with:")[0]
