"""One group on this machine: export the engine (gated on parity), then time it at each batch.

Takes a `Group` and the run's shared `GroupContext`; hands on one `ResultRow` per batch and never raises
for a problem of the cell itself (a missing runtime, a failed export or parity, a runtime error), so
the matrix goes on. With `--profile`, once every batch is timed, the engine is profiled per layer at its
first timed batch through the runtime's own profiler (a profiling engine of its own, never the timed
one); the profile's summary goes on that row, the full profile to `OUT/profiles/`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import models
import runtimes
from models import LoadedModel, ModelCard, ModelRequest
from runtimes import Runner
from runtimes.base import first_line

from ..data.images import DatasetError
from ..diagnose.profile import ProfileSettings, profile_runner, write_profile
from ..errors import DeployError
from ..export.onnx_cache import OnnxCache
from ..export.request import ExportRequest, ExportResult
from ..export.stage import export, load_artifact
from ..timing import LatencyStats, input_feeds, timed_runs, warm_up
from .accuracy import References, engine_accuracy
from .memory import MemoryWatch
from .plan import Group
from .results import AccuracyRecord, ParitySummary, ResultRow, Status
from .settings import BenchSettings

if TYPE_CHECKING:
    from ..export.manifest import Manifest
    from .power import PowerSampler


class ModelCache:
    """The models of a run, loaded once each and one at a time (the plan is model-major): every engine of a
    model, its accuracy reference and its export share one `LoadedModel`."""

    def __init__(self, requests: Mapping[str, ModelRequest] | None = None):
        self.requests = dict(requests or {})
        self._held: tuple[ModelRequest, LoadedModel] | None = None

    def request(self, name: str, settings: BenchSettings) -> ModelRequest:
        """What a cell's model name stands for: a request given in-process (a module), else the settings'."""
        return self.requests.get(name) or settings.model_request(name)

    def load(self, request: ModelRequest) -> LoadedModel:
        if self._held is None or self._held[0] != request:
            self._held = None  # drop the previous model before building the next
            self._held = (request, models.load_model(request))
        return self._held[1]


@dataclass(frozen=True)
class GroupContext:
    """What every group of one run shares."""

    settings: BenchSettings
    out: Path
    onnx_cache: OnnxCache
    references: References | None = None
    models: ModelCache = field(default_factory=ModelCache)


def run_group(group: Group, context: GroupContext) -> list[ResultRow]:
    """Export one engine, then time it at each batch: one result row per batch, never an exception."""
    rows = [planned_row(group, batch) for batch in group.batches]
    try:
        request = context.models.request(group.model, context.settings)
        loaded = context.models.load(request)
        rows = [planned_row(group, batch, loaded) for batch in group.batches]
        status = runtimes.get_backend(group.target).availability()
        if not status.available:
            return _marked(rows, "unavailable", status.reason)
        exported = export(_export_request(group, context, loaded), onnx_cache=context.onnx_cache)
        manifest = exported.manifest
        passes = list(manifest.onnx.passes) if manifest.onnx else []
        rows = [replace(row, parity=ParitySummary.of(manifest.parity), passes=passes) for row in rows]
        if manifest.status == "unverified":  # built, but this machine cannot run it: no latency, no parity
            return _marked(rows, "unverified", manifest.parity.skipped or "parity could not run here")
        return _run_engine(exported, rows, context)
    except (DeployError, models.ModelError, runtimes.RuntimeAdapterError) as exc:
        return _marked(rows, "failed", str(exc))
    except Exception as exc:  # a runtime's own exception type mid-run: record it, the matrix goes on
        return _marked(rows, "failed", f"{type(exc).__name__}: {first_line(exc)}")


def _export_request(group: Group, context: GroupContext, model: LoadedModel) -> ExportRequest:
    settings = context.settings
    options = (settings.options or {}).get(group.target)
    return ExportRequest(model, group.target, group.precision, out=context.out, passes=settings.passes,
                         batch=tuple(sorted({1, *group.batches})), threads=settings.threads, seed=settings.seed,
                         runtime_options=runtimes.get_backend(group.target).parse_options(options) if options else None)


def _marked(rows: list[ResultRow], status: Status, error: str) -> list[ResultRow]:
    return [replace(row, status=status, error=error) for row in rows]


def weights_label(model: LoadedModel) -> str:
    """Where a model's weights came from: a file or folder, one the zoo ships, or a random initialisation."""
    if model.weights is None:
        return "random-init"
    path, shipped = Path(model.weights.path), Path(models.__file__).parent
    return f"shipped:{path.relative_to(shipped)}" if path.is_relative_to(shipped) else model.weights.path


def planned_row(group: Group, batch: int, model: LoadedModel | None = None) -> ResultRow:
    """A cell's row before anything ran: what it is, and (once the model is built) its counts."""
    row = ResultRow(model=group.model, target=group.target, precision=group.precision, batch=batch, status="ok")
    if model is None:
        return row
    card: ModelCard = model.card
    return replace(row, model=card.name, family=card.family, params=card.params, macs=round(card.macs_g * 1e9),
                   published_top1=card.published_top1, weights=weights_label(model))


def _run_engine(exported: ExportResult, rows: list[ResultRow], context: GroupContext) -> list[ResultRow]:
    settings = context.settings
    watch = MemoryWatch()
    runner, manifest = load_artifact(exported.artifact_dir, threads=settings.threads)
    card = exported.loaded.card
    rows = [replace(row, runtime_options=manifest.engine.options or None) for row in rows]
    timed = []
    with runner:
        for row in rows:  # ascending batch: the running peak is this batch's peak
            try:
                timed.append(replace(_time_batch(runner, card, row, settings), memory=watch.snapshot()))
            except (DeployError, runtimes.RuntimeAdapterError) as exc:
                timed.append(replace(row, status="failed", error=str(exc)))
            except Exception as exc:  # e.g. a batch the engine's profile cannot take: the other batches go on
                timed.append(replace(row, status="failed", error=f"{type(exc).__name__}: {first_line(exc)}"))
        if settings.dataset and context.references is not None:
            try:
                record = _accuracy(runner, exported, max(r.batch for r in rows), context)
            except DatasetError as exc:  # no accuracy figure can be made: the cell fails, its timings kept
                record = AccuracyRecord(dataset=settings.dataset, error=str(exc))
                timed = [replace(row, status="failed", error=str(exc)) for row in timed]
            timed = [replace(row, accuracy=record) for row in timed]
        if settings.layer_profile:  # after every timed run: the profile never shares their time
            timed = _with_profile(runner, manifest, exported, timed, context)
    return timed


def _with_profile(runner: Runner, manifest: Manifest, exported: ExportResult, rows: list[ResultRow],
                  context: GroupContext) -> list[ResultRow]:
    """The first timed batch's row with the engine's per-layer profile (or why there is none)."""
    first = next((i for i, row in enumerate(rows) if row.status == "ok"), None)
    if first is None:
        return rows
    row, settings = rows[first], context.settings
    try:
        profile = profile_runner(runner, manifest, exported.artifact_dir,
                                 ProfileSettings(batch=row.batch, threads=settings.threads, seed=settings.seed,
                                                 buffers=settings.buffers),
                                 timed_ms=row.latency_ms.p50 if row.latency_ms else None)
        path = context.out / "profiles" / f"{row.model}-{row.target}-{row.precision}-b{row.batch}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_profile(path, profile)
        profiled = replace(row, layer_profile=profile.summary(file=str(path)))
    except (DeployError, runtimes.RuntimeAdapterError) as exc:
        profiled = replace(row, layer_profile_error=str(exc))
    except Exception as exc:  # the timings stand even if the profiler fails
        profiled = replace(row, layer_profile_error=f"{type(exc).__name__}: {first_line(exc)}")
    return [*rows[:first], profiled, *rows[first + 1:]]


def _accuracy(runner: Runner, exported: ExportResult, batch: int, context: GroupContext) -> AccuracyRecord:
    assert context.references is not None and context.settings.dataset is not None
    try:
        return engine_accuracy(runner, exported.loaded, batch, context.references)
    except DatasetError:
        raise
    except Exception as exc:  # the timings stand even if the accuracy pass fails
        return AccuracyRecord(dataset=context.settings.dataset, error=f"{type(exc).__name__}: {first_line(exc)}")


def _time_batch(runner: Runner, card: ModelCard, row: ResultRow, settings: BenchSettings) -> ResultRow:
    timing = settings.timing
    input_name = runner.input_specs[0].name if runner.input_specs else "input"
    feeds = input_feeds(input_name, card.input_size, row.batch, timing)
    load_before = _load_average()
    warmup_runs = warm_up(runner, feeds, timing)
    with _power(settings) as sampler:
        start = time.perf_counter()
        samples = timed_runs(runner, feeds, timing)
        timed_s = time.perf_counter() - start
    stats = LatencyStats.of(samples)
    return replace(row, latency_ms=stats, throughput_ips=row.batch * 1e3 / stats.mean, runs=len(samples),
                   warmup_runs=warmup_runs, timed_s=timed_s, load_average=[load_before, _load_average()],
                   power=sampler.summary(timed_s, len(samples) * row.batch) if sampler else None)


def _load_average() -> float | None:
    """The 1-minute load average: other processes competing for the cores show up here, not in the latencies' spread."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def _power(settings: BenchSettings) -> Iterator[PowerSampler | None]:
    if not settings.power:
        yield None
        return
    from .power import PowerSampler

    with PowerSampler() as sampler:
        yield sampler
