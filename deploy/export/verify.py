"""The parity gate's run: the built engine and PyTorch fp32 on the same inputs, at every batch.

Seeded standard-normal inputs at every requested batch for every precision; and for low precision on a model
with a shipped labelled set, top-1 agreement with PyTorch on its held-out images (>= `MIN_AGREEMENT`).
Comparison itself is `parity.compare` (kept apart from running, as Polygraphy does); this module runs both
sides and hands on the measured `parity` record, which `gate.decide` judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes import Runner

from ..data.images import seeded_batch
from .accuracy import predict, topk
from .manifest import ParityRecord, RealDataRecord
from .parity import LOW_PRECISIONS, MIN_AGREEMENT, TOLERANCES, compare, summarise

if TYPE_CHECKING:
    from runtimes import Availability, BuildResult

    from .request import EngineJob


def verify_engine(job: EngineJob, status: Availability, folder: Path, build: BuildResult,
                  batches: Sequence[int]) -> ParityRecord:
    """The engine in `folder` against PyTorch fp32 (measured, not yet judged), or why it could not run here."""
    tolerance = TOLERANCES[job.precision]
    limits = {"max_abs_rel": tolerance.max_abs_rel, "min_cosine": tolerance.min_cosine}
    inputs = f"standard normal, seed {job.seed}"
    # An engine may be unrunnable here even where its runtime runs (ExecuTorch's Core ML delegate on Linux).
    if not status.can_run or not build.can_run_here:
        reason = status.reason if not status.can_run else build.run_reason or ""
        return ParityRecord(limits, inputs, passed=None, skipped=f"{job.backend.name} cannot run here: {reason}")
    source = job.source
    spec, output = source.input_specs[0], source.output_names[0]
    # A static-shape engine is checked at the batches it serves; a dynamic one at every requested batch.
    served = sorted(set(build.batches or batches))
    with job.backend.load(folder, build.files[0], job.options, source.input_specs, source.output_names) as runner:
        reports = []
        for batch in served:
            x = seeded_batch(job.input_size, batch, job.seed + batch)
            reports.append(compare(job.reference(x), runner.infer({spec.name: x})[output], tolerance))
        # At the largest batch checked above: a "dynamic" engine may still be bounded (ExecuTorch serves up to
        # its largest export batch), and the labelled sets are small (the digits' 450 images).
        real = (_real_data(job, runner, max(served))
                if job.labelled is not None and job.precision in LOW_PRECISIONS else None)
    return ParityRecord(limits, inputs, **summarise(reports), real_data=real)


def _real_data(job: EngineJob, runner: Runner, batch: int) -> RealDataRecord:
    labelled = job.labelled
    assert labelled is not None
    spec, output = job.source.input_specs[0], job.source.output_names[0]
    logits = predict(lambda x: runner.infer({spec.name: x})[output], labelled.images, batch)
    reference = predict(job.reference, labelled.images, 64)
    agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    return RealDataRecord(dataset=labelled.name, images=len(labelled), agreement=agreement,
                          min_agreement=MIN_AGREEMENT, top1=topk(logits, labelled.labels, 1),
                          reference_top1=topk(reference, labelled.labels, 1), passed=agreement >= MIN_AGREEMENT)
