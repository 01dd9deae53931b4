"""How a benchmark run measures: timing, threads, seed, dataset, power, passes, weights, device profile, profiles.

Every field is recorded in the results file's `settings`; `RESUME_KEYS` are those whose change makes
old and new cells incomparable, so a resumed run must match them. The types check every value (pydantic)
wherever the settings come from: the command line (`bench_settings` names the flag), a device profile
(the file and key) or a results file (the file and field).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from ..timing import Count, PositiveCount, PositiveSeconds, Seconds, TimingSettings

if TYPE_CHECKING:
    from models import ModelRequest

RESUME_KEYS = ("warmup_s", "runs", "duration_s", "buffers", "seed", "passes", "threads", "dataset",
               "dataset_limit", "weights", "device", "num_classes", "img_size", "model_factory", "options")


@dataclass(frozen=True)
class BenchSettings:
    warmup_s: Seconds = 1.0
    min_warmup_runs: Count = 3
    runs: PositiveCount = 50
    duration_s: PositiveSeconds | None = None  # set: timed runs go on this long (at least `min_runs`) instead
    min_runs: PositiveCount = 5
    buffers: PositiveCount = 4
    threads: PositiveCount | None = None
    seed: Count = 0
    dataset: str | None = None  # "digits" or a class-subfolder image folder: top-1/top-5 per engine
    dataset_limit: PositiveCount | None = None
    power: Annotated[bool, Field(strict=True)] = False  # sample tegrastats during the timed runs (Jetson)
    passes: str | None = "default"  # as export's --passes
    weights: str | None = None  # a checkpoint, when benchmarking one model
    device: str | None = None  # the device profile's name
    # A per-layer profile of each engine at its first batch (`bench --profile`), after and apart from its timed runs.
    layer_profile: Annotated[bool, Field(strict=True)] = False
    # One model's fine-tune or factory, as export takes them (`--num-classes`, `--img-size`, `--model-factory`).
    num_classes: PositiveCount | None = None
    img_size: PositiveCount | None = None
    model_factory: str | None = None
    # Runtime options per target (`--option [TARGET.]KEY=VALUE`), applied where each engine is built and loaded.
    options: dict[str, dict[str, str]] | None = None

    def model_request(self, name: str) -> ModelRequest:
        """The model a cell's name stands for under these settings (a zoo variant, folder, fine-tune or factory)."""
        from models import ModelRequest

        factory = self.model_factory
        return ModelRequest(model=None if factory else name, name=name if factory else None, weights=self.weights,
                            num_classes=self.num_classes, img_size=self.img_size, factory=factory, seed=self.seed)

    @property
    def timing(self) -> TimingSettings:
        return TimingSettings(warmup_s=self.warmup_s, min_warmup_runs=self.min_warmup_runs, runs=self.runs,
                              duration_s=self.duration_s, min_runs=self.min_runs, buffers=self.buffers,
                              seed=self.seed)
