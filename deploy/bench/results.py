"""The results file: one typed row per (model, target, precision, batch), the schema version in one place.

`results.json` is read and written only through `ResultsDocument`: `load_results` validates a file
against these types (a missing key, a wrong type, an unknown schema version, or a time that is not a
finite, positive number is one clear error naming the file, the row and the field), and `ResultsFile`
rewrites it atomically after every finished cell, holding it for the whole run (`fileio.exclusive`) so
that a second run on the same file is refused instead of dropping rows. `results_json_schema()` is the JSON
Schema other tools can consume; `deploy/bench/results.schema.json` is it, generated from these types
(`python scripts/results_schema.py` rewrites it; a test keeps the two equal).

Fields that a cell may not have (`passes` before an export, `load_average` before timing, the parity
figures of an engine that could not run here) are left out of the JSON rather than written as null.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field, TypeAdapter, ValidationError

from ..diagnose.records import LayerProfile
from ..errors import DeployError, validation_problem
from ..fileio import BusyError, WriteError, exclusive, write_json_atomic, write_text_atomic
from ..passes.record import PassRecord

if TYPE_CHECKING:
    from ..export.manifest import ParityRecord
from ..timing import LatencyStats, NonNegative, Positive
from .settings import BenchSettings

SCHEMA_VERSION = 2
# unavailable: the runtime is not installed here; unverified: built, but it cannot run here (no parity, no latency).
Status = Literal["ok", "failed", "unavailable", "unverified"]


def _absent(value: object) -> bool:
    return value is None


OMITTED_IF_NONE = Field(default=None, exclude_if=_absent)  # a field the JSON leaves out when it has no value


class CellKey(NamedTuple):
    model: str
    target: str
    precision: str
    batch: int
    device: str | None = None  # a cluster run's device label: the same cell on two devices is two cells


@dataclass
class ParitySummary:
    """The parity gate's worst figures for the engine (all batches), or why it was skipped."""

    passed: bool | None = None
    max_abs: Annotated[float | None, OMITTED_IF_NONE] = None
    max_abs_rel: Annotated[float | None, OMITTED_IF_NONE] = None
    cosine: Annotated[float | None, OMITTED_IF_NONE] = None
    top1_agreement: Annotated[float | None, OMITTED_IF_NONE] = None
    skipped: Annotated[str | None, OMITTED_IF_NONE] = None

    @classmethod
    def of(cls, record: ParityRecord) -> ParitySummary:
        """From the manifest's parity record."""
        return cls(passed=record.passed, max_abs=record.max_abs, max_abs_rel=record.max_abs_rel, cosine=record.cosine,
                   top1_agreement=record.top1_agreement, skipped=record.skipped)


@dataclass
class AccuracyRecord:
    """Top-1/top-5 on labelled images next to PyTorch fp32's, or why the accuracy pass failed."""

    dataset: str
    source: Annotated[str | None, OMITTED_IF_NONE] = None
    images: Annotated[int | None, OMITTED_IF_NONE] = None
    top1: Annotated[float | None, OMITTED_IF_NONE] = None
    top5: Annotated[float | None, OMITTED_IF_NONE] = None
    reference_top1: Annotated[float | None, OMITTED_IF_NONE] = None
    reference_top5: Annotated[float | None, OMITTED_IF_NONE] = None
    agreement: Annotated[float | None, OMITTED_IF_NONE] = None
    batch: Annotated[int | None, OMITTED_IF_NONE] = None
    error: Annotated[str | None, OMITTED_IF_NONE] = None


@dataclass
class MemoryRecord:
    rss_peak_mb: float | None = None
    rss_at_load_mb: float | None = None
    method: str | None = None
    rss_growth_mb: float | None = None
    gpu_used_mb: Annotated[float | None, OMITTED_IF_NONE] = None


@dataclass
class PowerRecord:
    mean_w: float | None = None
    samples: int = 0
    rail: Annotated[str | None, OMITTED_IF_NONE] = None
    energy_mj_per_image: Annotated[float | None, OMITTED_IF_NONE] = None
    error: Annotated[str | None, OMITTED_IF_NONE] = None


@dataclass
class NodeRecord:
    """Where a cluster run's cell ran: the Ray node, its host, its labels and the device record read there."""

    node_id: str
    host: str
    labels: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)  # as a local run's environment.device, read on the node


@dataclass
class ResultRow:
    """One cell. `model`, `target`, `precision`, `batch` and `status` identify it and are always present."""

    model: str
    target: str
    precision: str
    batch: int
    status: Status
    family: str | None = None
    error: str | None = None
    latency_ms: LatencyStats | None = None
    throughput_ips: Positive | None = None
    parity: ParitySummary | None = None
    accuracy: AccuracyRecord | None = None
    memory: MemoryRecord | None = None
    power: PowerRecord | None = None
    params: int | None = None
    macs: int | None = None
    published_top1: float | None = None
    runs: int = 0
    warmup_runs: int = 0
    timed_s: NonNegative | None = None
    weights: str | None = None
    passes: Annotated[list[PassRecord] | None, OMITTED_IF_NONE] = None
    load_average: Annotated[list[float | None] | None, OMITTED_IF_NONE] = None
    device: Annotated[str | None, OMITTED_IF_NONE] = None  # cluster runs: the device label the cell was planned for
    node: Annotated[NodeRecord | None, OMITTED_IF_NONE] = None  # cluster runs: the node that ran it
    # `bench --profile`: where the time goes, by module (a summary; `layer_profile.file` holds the full one).
    layer_profile: Annotated[LayerProfile | None, OMITTED_IF_NONE] = None
    layer_profile_error: Annotated[str | None, OMITTED_IF_NONE] = None  # why the profile could not be made
    # The runtime options the engine ran with (built with, or overridden at load): the adapter's typed settings.
    runtime_options: Annotated[dict[str, Any] | None, OMITTED_IF_NONE] = None

    @property
    def key(self) -> CellKey:
        return CellKey(self.model, self.target, self.precision, self.batch, self.device)


@dataclass
class Environment:
    """Where a run measured: platform, processor, cores and threads, library and runtime versions, the device."""

    platform: str | None = None
    machine: str | None = None
    processor: str | None = None
    cpu_count: int | None = None
    threads: int | None = None
    python: str | None = None
    torch: str | None = None
    onnx: str | None = None
    numpy: str | None = None
    vit_deploy: str | None = None  # the version of vit-deploy that wrote the file
    runtimes: dict[str, str | None] = field(default_factory=dict)  # target -> its runtime's version (None: absent)
    device: Annotated[dict[str, Any] | None, OMITTED_IF_NONE] = None  # the device record: profile, detection


@dataclass
class PlanRecord:
    """What the run was asked to measure, so `bench --resume --json FILE` needs nothing else."""

    models: list[str]
    targets: list[str]
    batches: list[int]
    precision: str | None = None  # one precision for every target
    precisions: dict[str, list[str]] | None = None  # else per target (a device profile's table)
    out: str | None = None  # the artifact folder


@dataclass
class ResultsDocument:
    """A whole results file: when and where it ran, with which settings, and its rows in plan order."""

    schema: int = SCHEMA_VERSION
    created: str | None = None
    updated: Annotated[str | None, OMITTED_IF_NONE] = None
    complete: bool = False
    resumed: Annotated[list[str] | None, OMITTED_IF_NONE] = None
    environment: Environment = field(default_factory=Environment)
    settings: BenchSettings = field(default_factory=BenchSettings)
    plan: Annotated[PlanRecord | None, OMITTED_IF_NONE] = None
    results: list[ResultRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return _DOCUMENT.dump_python(self, mode="python")


_DOCUMENT = TypeAdapter(ResultsDocument)
_ROW = TypeAdapter(ResultRow)


def row_to_json(row: ResultRow) -> dict[str, Any]:
    return _ROW.dump_python(row, mode="python")


def results_json_schema() -> dict[str, Any]:
    schema = _DOCUMENT.json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"vit-deploy/results/{SCHEMA_VERSION}",
            **schema}


def parse_results(data: Any, source: str) -> ResultsDocument:
    """Validate a results file's parsed JSON; every problem is one DeployError naming where it is."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise DeployError(f"{source} is not a results JSON (no 'results' list)")
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise DeployError(f"{source} has results schema {version!r}; this version of vit-deploy reads schema "
                          f"{SCHEMA_VERSION} (re-run the benchmark to write one)")
    if isinstance(data.get("environment"), dict):
        data = {**data, "environment": _runtimes_of_old_files(data["environment"])}
    try:
        return _DOCUMENT.validate_python(data)
    except ValidationError as exc:
        raise DeployError(f"{source} is not a valid results file: {_first_problem(exc, data)}") from None


def _runtimes_of_old_files(env: dict[str, Any]) -> dict[str, Any]:
    """Files written before the environment was typed held each runtime's version as a "runtime:<target>" key."""
    old = {key.split(":", 1)[1]: value for key, value in env.items() if key.startswith("runtime:")}
    if not old:
        return env
    kept = {k: v for k, v in env.items() if not k.startswith("runtime:")}
    return {**kept, "runtimes": {**old, **env.get("runtimes", {})}}


def _first_problem(exc: ValidationError, data: dict[str, Any]) -> str:
    loc, what = validation_problem(exc)
    location = list(loc)
    where = "field " + ".".join(str(part) for part in location)
    if location[:1] == ["results"] and len(location) > 1 and isinstance(location[1], int):
        row = data["results"][location[1]]
        named = [k for k in CellKey._fields if k in row or k != "device"] if isinstance(row, dict) else []
        cell = "/".join(str(row.get(k, "?")) for k in named) if isinstance(row, dict) else "?"
        where = f"row {location[1]} ({cell}), field {'.'.join(str(p) for p in location[2:]) or '(row)'}"
    return f"{where}: {what}"


def load_results(path: Path) -> ResultsDocument:
    """A results JSON, with a one-line error for a missing, corrupt, foreign or invalid file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployError(f"cannot read results {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path} is not a results JSON (corrupt: {exc})") from None
    return parse_results(data, str(path))


class ResultsFile:
    """The results JSON (and any side formats), rewritten atomically after every finished cell.

    `claimed()` holds it for a run: before any cell runs, a path that is a folder or a file that is not a
    results file is refused (it is never overwritten), and so is a file another run is writing.
    """

    def __init__(self, path: Path | None, side_formats: Mapping[Path, Callable[[list[ResultRow]], str]] | None = None):
        self.path = path
        self.side_formats = dict(side_formats or {})  # the CSV and markdown views written beside the JSON

    @contextmanager
    def claimed(self) -> Iterator[None]:
        with ExitStack() as held:
            if self.path is not None:
                _check_replaceable(Path(self.path))
                try:
                    held.enter_context(exclusive(Path(self.path)))
                except BusyError as exc:
                    raise DeployError(f"{exc}, another bench run: wait for it to finish, or write the results to "
                                      "another file (a second writer would drop the first one's rows)") from None
            yield

    def write(self, document: ResultsDocument, now: str) -> None:
        document.updated = now
        if self.path:
            try:
                write_json_atomic(self.path, document.to_json())
            except WriteError as exc:
                kept = (f"; {self.path} keeps the cells finished before: continue with "
                        f"`python -m deploy bench --resume --json {self.path}`" if Path(self.path).exists() else "")
                raise WriteError(f"{exc}{kept}", exc.errno) from None
        for path, render in self.side_formats.items():
            write_text_atomic(path, render(document.results))


def _check_replaceable(path: Path) -> None:
    """Refuse a results path that is a folder, or a file holding something other than results."""
    if path.is_dir():
        raise DeployError(f"{path} is a folder: name a results file, such as {path / 'results.json'}")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with open(path, encoding="utf-8") as handle:
            looks_like_json = handle.read(4096).lstrip().startswith("{")
        data = json.loads(path.read_text(encoding="utf-8")) if looks_like_json else None
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("results"), list)):
        raise DeployError(f"{path} exists and is not a results file; it was left as it is: name another file "
                          "for the results (or remove it)")
