"""The ONNX half of the export stage: the clean export, the target's passes, the rewritten file.

Takes an `EngineJob` (the module, the target's passes) and the request's pass spec; hands on a
`SavedGraph` (the file the backend builds from, and the manifest's `onnx` record).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..passes import get_pass, run_passes
from . import onnx_export
from .autotune import select_passes
from .manifest import OnnxRecord
from .onnx_cache import GraphKey, OnnxCache, SavedGraph
from .targets import resolve_passes

if TYPE_CHECKING:
    import onnx

    from .autotune import AutotuneSettings
    from .request import EngineJob

EXPORTER = "torch.onnx.export(dynamo=True) + onnxslim"


def prepare_onnx(job: EngineJob, key: GraphKey, passes: str | None, autotune: AutotuneSettings | None,  # noqa: PLR0913
                 cache: OnnxCache, work: Path) -> SavedGraph:
    """The rewritten graph for this job: `--passes auto` measures candidates, otherwise the `passes` spec's list."""

    def clean() -> onnx.ModelProto:
        return cache.clean(key, lambda: onnx_export.clean_up(
            onnx_export.export_onnx(job.source.module, job.input_size, key.opset)))

    auto = None
    if passes == "auto":
        auto = cache.auto_choice(key, job.target.name, job.precision,
                                 lambda: select_passes(clean(), job, work / "auto", autotune))
        pass_names = list(auto.passes)
    else:
        pass_names = resolve_passes(job.target, passes, job.precision)
    # Precisions whose graph the export stage converts itself (fp16 with fp32 islands) append their pass.
    pass_names += [name for name in job.target.precision_passes.get(job.precision, ()) if name not in pass_names]
    graph = cache.saved(key, _cache_key(pass_names, job)) or _rewrite(clean(), key, tuple(pass_names), cache, job)
    return SavedGraph(graph.path, replace(graph.details, auto=auto)) if auto else graph


def _cache_key(pass_names: list[str] | tuple[str, ...], job: EngineJob) -> tuple[str, ...]:
    """The pass list, and for a calibrated graph how it was calibrated (it depends on that too)."""
    if job.calibration is not None and any(get_pass(name).calibrated for name in pass_names):
        return (*pass_names, f"calibrated:{job.calibration.method}:{len(job.calibration.feeds)}")
    return tuple(pass_names)


def _rewrite(clean: onnx.ModelProto, key: GraphKey, pass_names: tuple[str, ...], cache: OnnxCache,
             job: EngineJob) -> SavedGraph:
    cache_key = _cache_key(pass_names, job)
    proto, records = run_passes(clean, pass_names, job.calibration)
    onnx_export.check(proto)
    digest = hashlib.sha1(repr((key, cache_key)).encode()).hexdigest()[:10]
    path = cache.folder / f"{key.slug}-{digest}.onnx"
    sha256 = onnx_export.save_onnx(proto, path)
    details = OnnxRecord(exporter=EXPORTER, opset=onnx_export.opset_of(proto), sha256=sha256, passes=records,
                         op_histogram=onnx_export.op_histogram(proto))
    return cache.store(key, cache_key, SavedGraph(path, details))
