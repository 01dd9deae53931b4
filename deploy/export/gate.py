"""The parity gate's decision, made in one place: what the figures mean, the artifact's status, where it goes.

`verify` measures (the engine against PyTorch fp32 on seeded inputs, and on real images for low precision);
`decide` turns those figures into the final `ParityRecord` (what decided `passed`, and why it failed) and a
`Verdict`: the artifact's status, whether it is published or kept as `.failed`, and the exit code the command
line returns. Nothing downstream recomputes any of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .manifest import ParityRecord, Status
from .parity import LOW_PRECISIONS, RANDOM_INT8_NOTE, TOLERANCES

if TYPE_CHECKING:
    from .request import EngineJob

# `ParityRecord.gate` when the seeded inputs alone decide, and when nothing does (random-init int8: recorded only).
SEEDED_GATE = "seeded inputs"
RECORDED_ONLY = "recorded only"
FIX_HINT = "find the layer with: python -m deploy debug-precision {model} --target {target} --precision {precision}"
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class Verdict:
    """What the gate decided: the artifact's status, whether it is published as the target's engine, the exit."""

    status: Status  # ok, failed, or unverified (built, but it cannot run here)
    publish: bool  # False: kept beside the artifact as `.failed`, never loaded
    reason: str | None = None  # why it failed

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.status == "failed" else EXIT_OK


def decide(measured: ParityRecord, job: EngineJob, gated: bool = True) -> tuple[ParityRecord, Verdict]:
    """The final parity record and the verdict. `gated=False` (`--no-gate`) publishes a failed engine as well
    (its status still says failed, and the command still exits 1)."""
    if measured.skipped:
        return measured, Verdict("unverified", publish=True)
    record = _judged(measured, job)
    status: Status = "ok" if record.passed else "failed"
    return record, Verdict(status, publish=record.passed or not gated, reason=record.reason)


def _judged(record: ParityRecord, job: EngineJob) -> ParityRecord:
    """What decides `passed`: the seeded inputs, the real images, or (random-init int8) nothing."""
    seeded_gate = TOLERANCES[job.precision].seeded_gate
    seeded = record.passed if seeded_gate else True
    real = record.real_data
    if real is not None:
        gate = (f"seeded inputs and {real.images} {real.dataset} images" if seeded_gate
                else f"{real.images} {real.dataset} images")
        reason = record.reason
        if not real.passed:
            miss = f"{job.goal.miss(real.top1, real.reference_top1, real.agreement)} on the {real.dataset} images"
            reason = "; ".join(filter(None, [reason, miss]))
        record = replace(record, gate=gate, passed=bool(seeded) and real.passed, reason=reason)
    elif seeded_gate:
        record = replace(record, gate=SEEDED_GATE)
    else:
        record = replace(record, gate=RECORDED_ONLY, passed=True, reason=None, note=RANDOM_INT8_NOTE)
    if record.passed is False and job.precision in LOW_PRECISIONS:
        hint = FIX_HINT.format(model=job.model_name, target=job.target.name, precision=job.precision)
        record = replace(record, reason=f"{record.reason}; {hint}")
    return record
