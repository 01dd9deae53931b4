"""`--passes auto`: measure candidate pass sets on this device and keep the fastest that passes parity.

A rewrite is not a speed-up until it is measured on the target (fusing attention to
com.microsoft.MultiHeadAttention made ORT CPU slower on one machine and faster on another), so the
export stage can build each candidate the target spec lists, gate it on parity against PyTorch, and
time them here.

Method, chosen for a small shared machine where other processes steal cycles:
- every candidate is built and loaded first, then timed in interleaved rounds (candidate order reversed
  every other round), so drift and bursts of contention fall on all of them alike;
- a candidate's score is the best of its per-round medians: a round hit by contention does not decide;
- candidates are ordered simplest first (`none`, `default`, then the target's extras); the winner is the
  first whose score is within `tie_margin` of the best. A rewrite has to beat a simpler graph by more
  than the noise to be kept, so `auto` is never slower than the plain export by more than that margin.
- two candidates whose graphs come out identical are built and timed once.

The timing is the benchmark harness's (`deploy.timing.interleaved_rounds`, `LatencyStats`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from runtimes import ModelSource, Runner
from runtimes.base import first_line

from ..data.images import seeded_batch
from ..errors import DeployError
from ..passes import run_passes
from ..timing import MAX_SECONDS, LatencyStats, TimingSettings, input_feeds, interleaved_rounds
from .manifest import AutotuneRecord, CandidateLatency, CandidateParity, CandidateRecord
from .parity import TOLERANCES, compare
from .targets import TargetSpec, resolve_passes

if TYPE_CHECKING:
    from .request import EngineJob


@dataclass(frozen=True)
class AutotuneSettings:
    # Many short rounds rather than a few long ones: the score is a candidate's best round, so more rounds
    # give each candidate more chances of one free of contention from other processes.
    rounds: int = 5
    runs: int = 8  # timed inferences per candidate per round
    warmup_s: float = 0.3  # before the first round only
    batch: int = 1
    tie_margin: float = 0.02  # a candidate must beat every simpler one by more than this fraction

    @classmethod
    def from_env(cls) -> AutotuneSettings:
        """Defaults, overridden by DEPLOY_AUTO_ROUNDS / _RUNS / _WARMUP / _BATCH / _TIE_MARGIN."""
        settings = cls()
        casts: tuple[tuple[str, str, type[int] | type[float]], ...] = (
            ("rounds", "DEPLOY_AUTO_ROUNDS", int), ("runs", "DEPLOY_AUTO_RUNS", int),
            ("warmup_s", "DEPLOY_AUTO_WARMUP", float), ("batch", "DEPLOY_AUTO_BATCH", int),
            ("tie_margin", "DEPLOY_AUTO_TIE_MARGIN", float))
        for field_name, key, cast in casts:
            if key in os.environ:
                try:
                    value: Any = cast(os.environ[key])
                except ValueError:
                    raise DeployError(f"{key}={os.environ[key]!r} is not a valid {cast.__name__}") from None
                settings = replace(settings, **{field_name: value})
        if settings.rounds < 1 or settings.runs < 1 or settings.batch < 1:
            raise DeployError("autotune rounds, runs and batch must be at least 1")
        if not 0 <= settings.warmup_s <= MAX_SECONDS:  # also refuses NaN, which no clock ever passes
            raise DeployError(f"DEPLOY_AUTO_WARMUP must be between 0 and {MAX_SECONDS:g} seconds, "
                              f"not {settings.warmup_s}")
        return settings

    def to_json(self) -> dict[str, float]:
        return {"rounds": self.rounds, "runs": self.runs, "warmup_s": self.warmup_s, "batch": self.batch,
                "tie_margin": self.tie_margin}


def candidate_sets(target: TargetSpec, precision: str | None = None) -> list[tuple[str, list[str]]]:
    """(label, pass list) to try, simplest first: none, default, then the target's extras.

    Extras are written like `--passes` (`+a,-b` edits the default list), so the spec reads as
    "the default, but with ...". Lists that resolve to one already listed are dropped.
    """
    out: list[tuple[str, list[str]]] = []
    for spec in ("none", "default", *target.auto_candidates):
        names = resolve_passes(target, spec, precision)
        if all(names != seen for _, seen in out):
            out.append((spec, names))
    return out


def select_passes(proto: onnx.ModelProto, job: EngineJob, work: Path,
                  settings: AutotuneSettings | None = None) -> AutotuneRecord:
    """Build, gate and time every candidate; returns the manifest record, `passes` being the winner's."""
    settings = settings or AutotuneSettings.from_env()
    appended = list(job.target.precision_passes.get(job.precision, ()))
    x = seeded_batch(job.input_size, settings.batch, job.seed + settings.batch)
    trial = _Trial(job, x, job.reference(x), Path(work))
    started = time.perf_counter()
    records: list[CandidateRecord] = []
    built: dict[str, str] = {}  # graph digest -> label
    with contextlib.ExitStack() as kept:
        runners: dict[str, Runner] = {}
        for index, (label, names) in enumerate(candidate_sets(job.target, job.precision)):
            record = CandidateRecord(label, names)
            records.append(record)
            try:
                graph, pass_records = run_passes(proto, [*names, *appended], job.calibration)
                record.changes = {r.name: r.changed for r in pass_records}
                digest = hashlib.sha256(graph.SerializeToString()).hexdigest()
                if digest in built:
                    record.status, record.same_as = "same-graph", built[digest]
                    continue
                built[digest] = label
                runner = trial.run(graph, index, record, kept)
                if runner is not None:
                    runners[label] = runner
            except Exception as exc:  # a candidate that does not build or load is an outcome, not a crash
                record.status, record.error = "error", f"{type(exc).__name__}: {first_line(exc)}"
        if not runners:
            raise DeployError("--passes auto: no candidate built and passed parity: " + "; ".join(
                f"{r.label}: {r.error or r.status}" for r in records))
        _time_candidates(runners, records, job, settings)

    winner, reason = _choose([r for r in records if r.latency_ms is not None], settings.tie_margin)
    return AutotuneRecord(
        winner=winner.label, passes=winner.passes, appended=appended, reason=reason,
        statistic=f"score = best per-round median latency (ms), batch {settings.batch}; rounds interleaved",
        settings=settings.to_json(), seconds=round(time.perf_counter() - started, 1), candidates=records)


@dataclass(frozen=True)
class _Trial:
    """Builds a candidate graph, checks it on one seeded batch, and keeps its runner active if it passes."""

    job: EngineJob
    x: np.ndarray
    expected: np.ndarray
    work: Path

    def run(self, graph: onnx.ModelProto, index: int, record: CandidateRecord,
            kept: contextlib.ExitStack) -> Runner | None:
        job, spec, output = self.job, self.job.source.input_specs[0], self.job.source.output_names[0]
        folder = self.work / f"auto-{index}"
        (folder / "engine").mkdir(parents=True)
        path = folder / "candidate.onnx"
        onnx.save_model(graph, str(path))
        build = job.backend.build(ModelSource([spec], [output], onnx_path=path), folder / "engine", job.options)
        runner = job.backend.load(folder / "engine", build.files[0], job.options, [spec], [output])
        with contextlib.ExitStack() as active:
            active.enter_context(runner)
            report = compare(self.expected, runner.infer({spec.name: self.x})[output], TOLERANCES[job.precision])
            record.parity = CandidateParity(report.max_abs_rel, report.cosine, report.passed)
            if not report.passed:
                record.status, record.error = "failed-parity", report.reason
                return None
            kept.enter_context(active.pop_all())  # timed later, with the other passing candidates
        return runner


def _time_candidates(runners: dict[str, Runner], records: list[CandidateRecord], job: EngineJob,
                     settings: AutotuneSettings) -> None:
    timing = TimingSettings(warmup_s=settings.warmup_s, runs=settings.runs, buffers=2, seed=job.seed)
    feeds = input_feeds(job.source.input_specs[0].name, job.input_size, settings.batch, timing)
    timed = interleaved_rounds(runners, feeds, timing, settings.rounds, warm_once=True)
    for record in records:
        if record.label in runners:
            record.latency_ms = CandidateLatency(**asdict(LatencyStats.of(timed.samples[record.label])),
                                                 score=min(timed.medians[record.label]),
                                                 round_medians=timed.medians[record.label])


def _score(record: CandidateRecord) -> float:
    assert record.latency_ms is not None
    return record.latency_ms.score


def _choose(measured: list[CandidateRecord], tie_margin: float) -> tuple[CandidateRecord, str]:
    """The simplest candidate within `tie_margin` of the fastest, and why."""
    fastest = min(measured, key=_score)
    best = _score(fastest)
    winner = next(r for r in measured if _score(r) <= best * (1 + tie_margin))
    score = _score(winner)
    plain = next((r for r in measured if r.label == "none"), None)
    versus = ""
    if plain is not None and plain is not winner:
        versus = f"; {score / _score(plain):.3f}x the plain export's {_score(plain):.2f} ms"
    if winner is fastest:
        others = [r for r in measured if r is not winner]
        runner_up = min(others, key=_score) if others else None
        gap = f", {_score(runner_up) / score - 1:.1%} ahead of {runner_up.label}" if runner_up else ""
        return winner, f"fastest passing parity: {score:.2f} ms{gap}{versus}"
    return winner, (f"within {tie_margin:.0%} of the fastest ({fastest.label}, {best:.2f} ms) and simpler: "
                    f"{score:.2f} ms{versus}")
