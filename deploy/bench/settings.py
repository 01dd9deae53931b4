"""How a benchmark run measures: timing, threads, seed, dataset, power, passes, weights and device profile.

Every field is recorded in the results file's `settings`; `RESUME_KEYS` are those whose change makes
old and new cells incomparable, so a resumed run must match them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..timing import TimingSettings

RESUME_KEYS = ("warmup_s", "runs", "duration_s", "buffers", "seed", "passes", "threads", "dataset",
               "dataset_limit", "weights", "device")


@dataclass(frozen=True)
class BenchSettings:
    warmup_s: float = 1.0
    min_warmup_runs: int = 3
    runs: int = 50
    duration_s: float | None = None  # set: timed runs go on this long (at least `min_runs`) instead of `runs`
    min_runs: int = 5
    buffers: int = 4
    threads: int | None = None
    seed: int = 0
    dataset: str | None = None  # "digits" or a class-subfolder image folder: top-1/top-5 per engine
    dataset_limit: int | None = None
    power: bool = False  # sample tegrastats during the timed runs (Jetson)
    passes: str | None = "default"  # as export's --passes
    weights: str | None = None  # a checkpoint, when benchmarking one model
    device: str | None = None  # the device profile's name

    @property
    def timing(self) -> TimingSettings:
        return TimingSettings(warmup_s=self.warmup_s, min_warmup_runs=self.min_warmup_runs, runs=self.runs,
                              duration_s=self.duration_s, min_runs=self.min_runs, buffers=self.buffers,
                              seed=self.seed)
