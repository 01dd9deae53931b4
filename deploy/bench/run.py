"""Running the matrix: plan it, skip what a resumed file has, hand groups to an executor, write after every cell.

Each finished cell is written to the results JSON at once, so an interrupted run loses nothing and a
resumed one runs only the cells the file lacks. The executor is the seam: `LocalExecutor` runs groups
one after another in this process; tests and the device farm bring their own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import models

from ..errors import DeployError
from ..export.onnx_cache import OnnxCache
from ..export.targets import get_target
from ..fileio import ensure_writable
from .accuracy import References, check_dataset
from .environment import environment
from .group import GroupContext, run_group
from .plan import BenchRequest, Group, pending_groups
from .progress import Progress
from .results import CellKey, ResultRow, ResultsDocument, ResultsFile, load_results
from .settings import RESUME_KEYS, BenchSettings

GroupRunner = Callable[[Group, GroupContext], list[ResultRow]]
Finished = Callable[[list[ResultRow]], None]


class Executor(Protocol):
    def run(self, groups: Sequence[Group], request: BenchRequest, started: Callable[[Group], None],
            finished: Finished) -> None:
        """Run every group, calling `started` before and `finished` with its rows after each one."""


@dataclass(frozen=True)
class LocalExecutor:
    """Groups one after another in this process, sharing one ONNX cache (the plan is model-major)."""

    run_group: GroupRunner = run_group

    def run(self, groups: Sequence[Group], request: BenchRequest, started: Callable[[Group], None],
            finished: Finished) -> None:
        settings = request.settings
        references = References(settings.dataset, settings.dataset_limit) if settings.dataset else None
        with tempfile.TemporaryDirectory(dir=request.out, prefix=".bench-onnx-") as cache_dir:
            context = GroupContext(settings, Path(request.out), OnnxCache(Path(cache_dir)), references)
            for group in groups:
                started(group)
                finished(self.run_group(group, context))


@dataclass(frozen=True)
class Resume:
    """Continue the results file: skip the cells it has (failed ones too, unless `retry_failed`)."""

    retry_failed: bool = False


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_bench(request: BenchRequest, results: ResultsFile | None = None, *, resume: Resume | None = None,
              progress: Progress | None = None, executor: Executor | None = None) -> ResultsDocument:
    """Run the matrix; returns the results document (also written to `results` after every cell)."""
    request = _validated(request)
    ensure_writable(request.out)
    results = results or ResultsFile(None)
    plan = [key for matrix in request.matrices() for key in matrix.cells()]
    document = ResultsDocument(created=now(), environment=environment(request.settings.threads, request.device),
                               settings=request.settings)
    rows: dict[CellKey, ResultRow] = {}
    if resume and results.path and results.path.exists():
        document, rows = _resumed(results.path, request.settings, resume)
    progress = progress or Progress()
    progress.start(len(plan), sum(1 for key in plan if key in rows))

    def finished(group_rows: list[ResultRow]) -> None:
        for row in group_rows:
            rows[row.key] = row
            document.results = _ordered(plan, rows)
            results.write(document, now())
            progress.cell_finished(row)

    try:
        (executor or LocalExecutor()).run(pending_groups(plan, rows), request,
                                          lambda group: progress.cell_started(group.keys()[0]), finished)
    finally:
        progress.close()
    document.complete = True
    document.results = _ordered(plan, rows)
    results.write(document, now())
    return document


def _validated(request: BenchRequest) -> BenchRequest:
    """The request with registry names for its models; every name, target and dataset checked before any export."""
    matrices = []
    for matrix in request.matrices():
        names = [models.resolve_name(m) for m in matrix.models]  # fail fast on a typo
        for target in matrix.targets:
            get_target(target)
        if request.settings.dataset:
            for name in names:
                check_dataset(request.settings.dataset, models.get_model_info(name))
        matrices.append(replace(matrix, models=names))
    if request.devices:
        return replace(request, devices=tuple(matrices))
    return replace(request, models=matrices[0].models)


def _resumed(path: Path, settings: BenchSettings, resume: Resume) -> tuple[ResultsDocument, dict[CellKey, ResultRow]]:
    old = load_results(path)
    was, current = asdict(old.settings), asdict(settings)
    differ = [k for k in RESUME_KEYS if was.get(k) != current.get(k)]
    if differ:
        detail = ", ".join(f"{k}={was.get(k)!r} there, {current.get(k)!r} now" for k in differ)
        raise DeployError(f"--resume: {path} was run with other settings ({detail}); "
                          "repeat its settings or write a new --json")
    rows: dict[CellKey, ResultRow] = {}
    for row in old.results:
        if resume.retry_failed and row.status == "failed":
            continue
        rows.setdefault(row.key, row)  # a cell is kept once, even if a file somehow lists it twice
    return replace(old, settings=settings, complete=False, resumed=[*(old.resumed or []), now()], results=[]), rows


def _ordered(plan: list[CellKey], rows: dict[CellKey, ResultRow]) -> list[ResultRow]:
    planned = set(plan)
    return [rows[k] for k in plan if k in rows] + [row for k, row in rows.items() if k not in planned]
