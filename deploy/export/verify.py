"""The parity gate's run: the built engine and PyTorch fp32 on the same seeded inputs, at every batch.

Comparison itself is `parity.compare` (kept apart from running, as Polygraphy does); this module runs
both sides and hands on the manifest's `parity` record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.images import seeded_batch
from .parity import TOLERANCES, compare, summarise

if TYPE_CHECKING:
    from runtimes import Availability, BuildResult

    from .request import EngineJob


def verify_engine(job: EngineJob, status: Availability, folder: Path, build: BuildResult,
                  batches: Sequence[int]) -> dict[str, Any]:
    """Parity of the engine in `folder` against PyTorch fp32, or why it could not run here."""
    tolerance = TOLERANCES[job.precision]
    record: dict[str, Any] = {"tolerance": {"max_abs_rel": tolerance.max_abs_rel, "min_cosine": tolerance.min_cosine},
                              "inputs": f"standard normal, seed {job.seed}"}
    # An engine may be unrunnable here even where its runtime runs (ExecuTorch's Core ML delegate on Linux).
    if not status.can_run or build.details.get("can_run_here") is False:
        reason = status.reason if not status.can_run else build.details.get("run_reason", "")
        record.update(passed=None, skipped=f"{job.backend.name} cannot run here: {reason}")
        return record
    source = job.source
    spec, output = source.input_specs[0], source.output_names[0]
    # A static-shape engine is checked at the batches it serves; a dynamic one at every requested batch.
    reports = []
    with job.backend.load(folder, build.files[0], job.options, source.input_specs, source.output_names) as runner:
        for batch in sorted(set(build.batches or batches)):
            x = seeded_batch(job.input_size, batch, job.seed + batch)
            reports.append(compare(job.reference(x), runner.infer({spec.name: x})[output], tolerance))
    record.update(summarise(reports))
    return record
