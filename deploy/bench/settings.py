"""How a benchmark run measures: timing, threads, seed, dataset, power, passes, weights, device profile, profiles.

Every field is recorded in the results file's `settings`; `RESUME_KEYS` are those whose change makes
old and new cells incomparable, so a resumed run must match them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DeployError
from ..timing import TimingSettings

if TYPE_CHECKING:
    from models import ModelRequest

RESUME_KEYS = ("warmup_s", "runs", "duration_s", "buffers", "seed", "passes", "threads", "dataset",
               "dataset_limit", "weights", "device", "num_classes", "img_size", "model_factory", "options")


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
    # A per-layer profile of each engine at its first batch (`bench --profile`), after and apart from its timed runs.
    layer_profile: bool = False
    # One model's fine-tune or factory, as export takes them (`--num-classes`, `--img-size`, `--model-factory`).
    num_classes: int | None = None
    img_size: int | None = None
    model_factory: str | None = None
    # Runtime options per target (`--option [TARGET.]KEY=VALUE`), applied where each engine is built and loaded.
    options: dict[str, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        at_least = {"--runs": (self.runs, 1), "--buffers": (self.buffers, 1), "--warmup": (self.warmup_s, 0),
                    "--threads": (self.threads, 1), "--limit": (self.dataset_limit, 1), "--seed": (self.seed, 0),
                    "min_runs": (self.min_runs, 1), "min_warmup_runs": (self.min_warmup_runs, 0)}
        for flag, (value, floor) in at_least.items():
            if value is not None and value < floor:
                raise DeployError(f"{flag} must be at least {floor}, not {value}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise DeployError(f"--duration must be more than 0 seconds, not {self.duration_s}")

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
