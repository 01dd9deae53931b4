"""The benchmark harness: a matrix of (model, target, precision, batch) cells in, a results file out.

Takes a `BenchRequest` (models, targets, batches, `BenchSettings`, a device profile from
`device_profiles` checked against `detect`); hands on a `ResultsDocument` (`results`: typed rows, the
schema, the JSON Schema file) written after every cell. `run` plans and resumes; an executor runs each
`Group` (`group`: export through the export stage, then timing from `deploy.timing`, `memory`, `power`,
`accuracy`); `formats` and `progress` are its text outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..callable import callable_package
from .plan import BenchRequest
from .results import ResultRow, ResultsDocument, ResultsFile, load_results
from .settings import BenchSettings

if TYPE_CHECKING:
    from .run import LocalExecutor, Resume, run_bench

__all__ = ["BenchRequest", "BenchSettings", "LocalExecutor", "Resume", "ResultRow", "ResultsDocument", "ResultsFile",
           "load_results", "run_bench"]


def __getattr__(name: str) -> Any:
    # Running pulls in the export stage and the runtimes; reading results files (report, compare) does not.
    if name in ("run_bench", "Resume", "LocalExecutor"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bench(models: Any, targets: Any = ("onnxruntime",), /, **kwargs: Any) -> Any:
    from .api import bench_models

    return bench_models(models, targets, **kwargs)


callable_package(__name__, _bench)  # `from deploy import bench; bench(model, ["onnxruntime"], runs=20)`
