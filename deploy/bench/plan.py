"""The benchmark matrix: every (model, target, precision, batch) cell in run order, grouped per engine.

A local run has one matrix; a cluster run has one `DeviceMatrix` per device label, whose cells and groups
carry that label (the same cell on two devices is two cells).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..export.targets import get_target
from .results import CellKey
from .settings import BenchSettings

if TYPE_CHECKING:
    from models import ModelRequest


@dataclass(frozen=True)
class DeviceMatrix:
    """One device's matrix: models x targets x precisions x batches, run where the device label is `device`."""

    device: str | None
    models: Sequence[str]
    targets: Sequence[str]
    batches: Sequence[int]
    precision: str | None = None
    precisions: Mapping[str, tuple[str, ...]] | None = None

    def cells(self) -> list[CellKey]:
        return plan_matrix(self.models, self.targets, self.batches, self.precision, self.precisions, self.device)


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark: the matrix (models x targets x precisions x batches), how, and where artifacts go."""

    models: Sequence[str]
    targets: Sequence[str]
    batches: Sequence[int]
    settings: BenchSettings
    out: Path
    precision: str | None = None  # one precision for every target; else `precisions`, else each target's default
    precisions: Mapping[str, tuple[str, ...]] | None = None
    device: Mapping[str, Any] | None = None  # the device record (profile, detection, settings read)
    devices: tuple[DeviceMatrix, ...] = ()  # a cluster run: one matrix per device label (then models... are unused)
    # Models given in-process (the Python API's modules), by the name the run calls them; the others are what
    # `settings.model_request(name)` says (zoo variants, folders, fine-tunes, a factory).
    model_requests: Mapping[str, ModelRequest] = field(default_factory=dict)

    def matrices(self) -> tuple[DeviceMatrix, ...]:
        """The device matrices of a cluster run, or this machine's one matrix."""
        return self.devices or (DeviceMatrix(None, self.models, self.targets, self.batches, self.precision,
                                             self.precisions),)


@dataclass(frozen=True)
class Group:
    """One engine, timed at each of its batches: the unit the harness exports, loads and dispatches."""

    model: str
    target: str
    precision: str
    batches: tuple[int, ...]
    device: str | None = None  # a cluster run's device label

    def keys(self) -> list[CellKey]:
        return [CellKey(self.model, self.target, self.precision, b, self.device) for b in self.batches]


def plan_matrix(names: Sequence[str], targets: Sequence[str], batches: Sequence[int], precision: str | None,
                precisions: Mapping[str, tuple[str, ...]] | None = None, device: str | None = None) -> list[CellKey]:
    """Every cell in run order; `precision` overrides the per-target list, which defaults to each target's default."""
    cells = []
    for name in names:
        for target in targets:
            spec = get_target(target)
            chosen = (precision,) if precision else (precisions or {}).get(target) or (spec.default_precision,)
            for prec in chosen:
                for batch in sorted(set(batches)):
                    cells.append(CellKey(name, target, prec, batch, device))
    return cells


def pending_groups(plan: Iterable[CellKey], done: Iterable[CellKey]) -> list[Group]:
    """The groups of the cells not done yet, in plan order (model-major, so one model's graphs are held at a time)."""
    finished = set(done)
    batches: dict[tuple[str, str, str, str | None], list[int]] = {}
    for key in plan:
        if key not in finished:
            batches.setdefault((key.model, key.target, key.precision, key.device), []).append(key.batch)
    return [Group(model, target, precision, tuple(b), device)
            for (model, target, precision, device), b in batches.items()]
