"""Running the matrix: plan it, skip what a resumed file has, hand groups to an executor, write after every cell.

Each finished cell is written to the results JSON at once, so an interrupted run loses nothing and a
resumed one runs only the cells the file lacks. The executor is the seam: `LocalExecutor` runs groups
one after another in this process; tests and the device farm bring their own.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import models
from models.card import is_hub_folder

from ..errors import DeployError
from ..export.artifacts import owned_prefix, sweep
from ..export.limits import check_batch_sizes, check_batches
from ..export.onnx_cache import OnnxCache
from ..export.targets import get_target
from ..fileio import ensure_writable
from .accuracy import References, check_dataset
from .environment import environment
from .group import GroupContext, ModelCache, run_group
from .plan import BenchRequest, Group, pending_groups
from .progress import Progress
from .results import CellKey, PlanRecord, ResultRow, ResultsDocument, ResultsFile, load_results
from .settings import RESUME_KEYS, BenchSettings

log = logging.getLogger("deploy")
GroupRunner = Callable[[Group, GroupContext], list[ResultRow]]
Finished = Callable[[list[ResultRow]], None]


class Executor(Protocol):
    def run(self, groups: Sequence[Group], request: BenchRequest, started: Callable[[Group], None],
            finished: Finished) -> None:
        """Run every group, calling `started` before and `finished` with its rows after each one."""


class LocalExecutor:
    """Groups one after another in this process, sharing one ONNX cache (the plan is model-major).

    `group_runner` replaces `group.run_group` (tests bring a fake); the default is looked up when it runs.
    """

    def __init__(self, group_runner: GroupRunner | None = None):
        self.group_runner = group_runner

    def run(self, groups: Sequence[Group], request: BenchRequest, started: Callable[[Group], None],
            finished: Finished) -> None:
        settings = request.settings
        references = References(settings.dataset, settings.dataset_limit) if settings.dataset else None
        with tempfile.TemporaryDirectory(dir=request.out, prefix=owned_prefix("bench-onnx")) as cache_dir:
            context = GroupContext(settings, Path(request.out), OnnxCache(Path(cache_dir)), references,
                                   ModelCache(request.model_requests))
            run = self.group_runner or run_group
            for group in groups:
                started(group)
                finished(run(group, context))


@dataclass(frozen=True)
class Resume:
    """Continue the results file: skip the cells it has, except failed ones with `retry_failed` and the
    cells `retry` names (`model/target/precision/batch`, or `model/target/precision` for every batch)."""

    retry_failed: bool = False
    retry: tuple[str, ...] = ()

    def reruns(self, row: ResultRow) -> bool:
        cell = f"{row.model}/{row.target}/{row.precision}"
        named = cell in self.retry or f"{cell}/{row.batch}" in self.retry
        return named or (self.retry_failed and row.status == "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_bench(request: BenchRequest, results: ResultsFile | None = None, *, resume: Resume | None = None,
              progress: Progress | None = None, executor: Executor | None = None) -> ResultsDocument:
    """Run the matrix; returns the results document (also written to `results` after every cell)."""
    request = _validated(request)
    ensure_writable(request.out)
    swept = sweep(request.out)
    if swept.folders:
        log.info("removed %d folder(s) left by killed runs in %s, freeing %.0f MB", swept.folders, request.out,
                 swept.bytes / 2**20)
    results = results or ResultsFile(None)
    with results.claimed():  # before any cell runs: a folder, a foreign file or a file in use is refused here
        return _run(request, results, resume, progress or Progress(), executor or LocalExecutor())


def _run(request: BenchRequest, results: ResultsFile, resume: Resume | None, progress: Progress,
         executor: Executor) -> ResultsDocument:
    plan = [key for matrix in request.matrices() for key in matrix.cells()]
    document = ResultsDocument(created=now(), environment=environment(request.settings.threads, request.device),
                               settings=request.settings, plan=_plan_record(request))
    rows: dict[CellKey, ResultRow] = {}
    if resume and results.path and results.path.exists():
        document, rows = _resumed(results.path, request.settings, resume)
        document.plan = _plan_record(request)
    progress.start(len(plan), sum(1 for key in plan if key in rows))

    def finished(group_rows: list[ResultRow]) -> None:
        for row in group_rows:
            rows[row.key] = row
            document.results = _ordered(plan, rows)
            results.write(document, now())
            progress.cell_finished(row)

    try:
        executor.run(pending_groups(plan, rows), request, lambda group: progress.cell_started(group.keys()[0]),
                     finished)
    finally:
        progress.close()
    document.complete = True
    document.results = _ordered(plan, rows)
    results.write(document, now())
    return document


def _plan_record(request: BenchRequest) -> PlanRecord | None:
    """The local matrix, so `--resume --json FILE` needs nothing else (a cluster run is resumed with its flags)."""
    if request.devices:
        return None
    precisions = {t: list(p) for t, p in request.precisions.items()} if request.precisions else None
    return PlanRecord(models=list(request.models), targets=list(request.targets),
                      batches=sorted(set(request.batches)), precision=request.precision, precisions=precisions,
                      out=str(request.out))


def _validated(request: BenchRequest) -> BenchRequest:
    """The request with registry names for its models; every name, target, batch and dataset checked before any
    export (a zoo variant's fit in memory too: the others' is checked when they are built)."""
    matrices = []
    for matrix in request.matrices():
        model_requests = {m: request.model_requests.get(m) or request.settings.model_request(m) for m in matrix.models}
        names = [r.display_name for r in model_requests.values()]  # fail fast on a typo
        for target in matrix.targets:
            get_target(target)
        check_batch_sizes(matrix.batches)
        for model in model_requests.values():
            if _zoo(model):
                assert model.model is not None
                name = models.resolve_name(model.model)
                check_batches(matrix.batches, name)
                if request.settings.dataset:
                    check_dataset(request.settings.dataset, models.get_model_info(name), model.num_classes)
        matrices.append(replace(matrix, models=names))
    given = {r.display_name: r for r in request.model_requests.values()}
    if request.devices:
        return replace(request, devices=tuple(matrices), model_requests=given)
    return replace(request, models=matrices[0].models, model_requests=given)


def _zoo(model: models.ModelRequest) -> bool:
    """A zoo variant at its registered input size: its memory footprint is known before it is built."""
    return (model.module is None and model.factory is None and model.model is not None
            and not is_hub_folder(model.model) and model.img_size is None)


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
        if resume.reruns(row):
            continue
        rows.setdefault(row.key, row)  # a cell is kept once, even if a file somehow lists it twice
    return replace(old, settings=settings, complete=False, resumed=[*(old.resumed or []), now()], results=[]), rows


def _ordered(plan: list[CellKey], rows: dict[CellKey, ResultRow]) -> list[ResultRow]:
    planned = set(plan)
    return [rows[k] for k in plan if k in rows] + [row for k, row in rows.items() if k not in planned]
