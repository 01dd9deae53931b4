"""What the harness reports while it runs: a plain line per finished cell, or a rich progress bar."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .results import CellKey, ResultRow

if TYPE_CHECKING:
    from rich.progress import TaskID


class Progress:
    """The harness's hooks; the default reports nothing."""

    def start(self, total: int, done: int) -> None: ...

    def cell_started(self, key: CellKey) -> None: ...

    def cell_finished(self, row: ResultRow) -> None: ...

    def close(self) -> None: ...


def cell_line(row: ResultRow) -> str:
    lat, acc = row.latency_ms, row.accuracy
    extra = f"p50 {lat.p50:.2f} ms ({row.runs} runs)" if lat else (row.error or "")
    if acc and acc.top1 is not None and acc.reference_top1 is not None:
        extra += f", top-1 {100 * acc.top1:.2f}% (torch {100 * acc.reference_top1:.2f}%)"
    elif acc:
        extra += f", accuracy failed: {acc.error}"
    return f"  {row.model} {row.target} {row.precision} b{row.batch}: {row.status} {extra}"


def _resuming(total: int, done: int) -> str:
    return f"resuming: {done} of {total} cells already in the results file"


class LinePrinter(Progress):
    """One plain line per finished cell on stderr (logs, CI, --no-progress)."""

    def start(self, total: int, done: int) -> None:
        if done:
            print(_resuming(total, done), file=sys.stderr, flush=True)

    def cell_finished(self, row: ResultRow) -> None:
        print(cell_line(row), file=sys.stderr, flush=True)


class RichProgress(Progress):
    """A rich progress bar over the matrix on stderr, with one line per finished cell above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.console = Console(stderr=True)
        self.bar = Bar(
            TextColumn("[bold]bench[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.task: TaskID | None = None

    def start(self, total: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("", total=total, completed=done)
        if done:
            self.console.print(_resuming(total, done), soft_wrap=True)

    def cell_started(self, key: CellKey) -> None:
        if self.task is not None:
            self.bar.update(self.task, description=f"{key.model} {key.target} {key.precision}")

    def cell_finished(self, row: ResultRow) -> None:
        self.console.print(cell_line(row), markup=False, highlight=False, soft_wrap=True)
        if self.task is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        self.bar.stop()
