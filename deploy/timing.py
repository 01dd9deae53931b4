"""Timing an engine: warm-up, timed runs, interleaved rounds and latency statistics.

A leaf module: it knows runners only as objects with `infer(feed)`, so the benchmark harness and the
export stage's pass selection (`--passes auto`) time engines the same way without depending on each other.

Method (README, "Measurement method"): warm up for a fixed time and at least a few runs, then time
`runs` inferences (or as many as fit in `duration_s`), rotating among several seeded input buffers so
that one cache-hot input does not flatter small models. Each inference is timed alone with
`time.perf_counter()`; statistics use numpy's linear interpolation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Protocol

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass as validated_dataclass

from .data.images import seeded_batch

Feed = dict[str, np.ndarray]


class Inferable(Protocol):
    def infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...


# An hour of warm-up or of timed runs per cell at most: long enough for a soak test, short enough that a typo
# (`--duration inf`, a NaN, which no clock ever passes) ends instead of running forever.
MAX_SECONDS = 3600.0
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False, strict=True)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False, strict=True)]
Count = Annotated[int, Field(ge=0, strict=True)]  # strict: neither `true` nor 2.5 is a count
PositiveCount = Annotated[int, Field(ge=1, strict=True)]


@validated_dataclass(frozen=True)
class TimingSettings:
    """How long to warm up and time an engine; every value is checked (type and range) when it is built."""

    warmup_s: Seconds = 1.0
    min_warmup_runs: Count = 3
    runs: PositiveCount = 50
    duration_s: PositiveSeconds | None = None  # set: timed runs go on this long (at least `min_runs`) instead
    min_runs: PositiveCount = 5
    buffers: PositiveCount = 4
    seed: Count = 0


# What a results file may hold as a measurement: a latency is finite and above 0 (perf_counter never stands
# still for a whole inference), a spread or a total time may be 0. Checked on read (pydantic), so a NaN, an
# inf or a negative time never reaches a report or a regression gate.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference wall latency in ms: percentiles (numpy's linear interpolation), mean, population std."""

    p50: Positive
    p90: Positive
    p95: Positive
    p99: Positive
    mean: Positive
    std: NonNegative
    min: Positive
    max: Positive

    @classmethod
    def of(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
        return cls(float(p50), float(p90), float(p95), float(p99), float(values.mean()), float(values.std()),
                   float(values.min()), float(values.max()))

    def get(self, statistic: str) -> float:
        """One statistic by name ("p50", "min", ...), as `--metric` names them."""
        if statistic not in STATISTICS:
            raise KeyError(statistic)
        return float(getattr(self, statistic))


STATISTICS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")


def input_feeds(input_name: str, input_size: tuple[int, ...], batch: int, settings: TimingSettings) -> list[Feed]:
    # Several distinct buffers: one reused input stays cache-hot and flatters small models.
    return [{input_name: seeded_batch(input_size, batch, settings.seed + 100 + i)} for i in range(settings.buffers)]


def warm_up(runner: Inferable, feeds: Sequence[Feed], settings: TimingSettings) -> int:
    """Run until `warmup_s` has passed and at least `min_warmup_runs` ran; returns how many ran."""
    start, done = time.perf_counter(), 0
    while done < settings.min_warmup_runs or time.perf_counter() - start < settings.warmup_s:
        runner.infer(feeds[done % len(feeds)])
        done += 1
    return done


def timed_runs(runner: Inferable, feeds: Sequence[Feed], settings: TimingSettings) -> list[float]:
    """Per-inference wall latencies in ms: `runs` of them, or as many as fit in `duration_s`."""
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        if settings.duration_s is None:
            if len(samples) >= settings.runs:
                break
        elif len(samples) >= settings.min_runs and time.perf_counter() - start >= settings.duration_s:
            break
        t0 = time.perf_counter()
        runner.infer(feeds[len(samples) % len(feeds)])
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def time_runner(runner: Inferable, input_name: str, input_size: tuple[int, ...], batch: int,
                settings: TimingSettings) -> list[float]:
    """Per-inference wall latencies in ms, after a time-based warm-up."""
    feeds = input_feeds(input_name, input_size, batch, settings)
    warm_up(runner, feeds, settings)
    return timed_runs(runner, feeds, settings)


@dataclass(frozen=True)
class RoundsResult:
    samples: dict[str, list[float]]  # every timed run of each label
    medians: dict[str, list[float]]  # each label's median per round


def interleaved_rounds(runners: Mapping[str, Inferable], feeds: Sequence[Feed], settings: TimingSettings,
                       rounds: int, warm_once: bool = False) -> RoundsResult:
    """Time runners round by round in alternating order (A B C, C B A, ...), so that drift in the machine's
    state falls on all of them alike.

    `warm_once`: the full warm-up only in the first round, one warm-up run in the later ones.
    """
    samples: dict[str, list[float]] = {label: [] for label in runners}
    medians: dict[str, list[float]] = {label: [] for label in runners}
    labels = list(runners)
    later = replace(settings, warmup_s=0.0, min_warmup_runs=1) if warm_once else settings
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            round_settings = settings if index == 0 else later
            warm_up(runners[label], feeds, round_settings)
            times = timed_runs(runners[label], feeds, round_settings)
            samples[label].extend(times)
            medians[label].append(float(np.median(times)))
    return RoundsResult(samples, medians)
