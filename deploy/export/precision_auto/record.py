"""`--precision auto`'s record in the manifest, typed: every candidate built (precision, recipe, layers kept in
float, accuracy or agreement, latency, and why it won or lost), the goal, the layer ranking, the placement rule.

Also the two readings of it the command line and the results file share: the Pareto front (a candidate is on it
when no other candidate is at least as fast and at least as accurate, and better in one) and the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from ...timing import CandidateLatency


def _absent(value: object) -> bool:
    return value is None


OMITTED_IF_NONE = Field(default=None, exclude_if=_absent)

# chosen: published; passed: met the goal, lost on latency; failed: missed the goal; error: did not build or
# run; skipped: not built (over --auto-budget, or nothing to measure it on).
CandidateStatus = Literal["chosen", "passed", "failed", "error", "skipped"]


@dataclass
class CandidateAccuracy:
    """A candidate on the goal's labelled images, next to PyTorch fp32 on the same images."""

    dataset: str
    images: int
    top1: float
    reference_top1: float
    agreement: float  # share of images whose top-1 equals PyTorch fp32's

    @property
    def drop(self) -> float:
        return self.reference_top1 - self.top1


@dataclass
class CandidateSeeded:
    """The parity figures on seeded inputs (worst over the checked batches): the gate without labelled images."""

    max_abs_rel: float
    cosine: float


@dataclass
class PrecisionCandidate:
    label: str  # "int8 entropy", "int8 minmax, 1 layer float"
    precision: str  # fp32, fp16, bf16, int8
    recipe: str  # how it is made, in words
    status: CandidateStatus
    reason: str  # why it won or lost, or why it was not measured
    float_layers: list[str] = field(default_factory=list)  # PyTorch module paths kept in float
    accuracy: Annotated[CandidateAccuracy | None, OMITTED_IF_NONE] = None
    seeded: Annotated[CandidateSeeded | None, OMITTED_IF_NONE] = None
    latency_ms: Annotated[CandidateLatency | None, OMITTED_IF_NONE] = None
    pareto: bool = False  # on the accuracy-latency Pareto front of the timed candidates
    build_s: Annotated[float | None, OMITTED_IF_NONE] = None


@dataclass
class LayerNoise:
    """A layer's share of the int8 graph's error: the noise it adds beyond its inputs' (debug-precision's SQNR)."""

    module: str
    added_noise: float  # noise power added, as a fraction of the output's signal power (summed over its nodes)
    sqnr_db: float  # the worst SQNR of its outputs against fp32


@dataclass
class PlacementGroup:
    """One kind of layer (every block's `attn.qkv`, say) in a Q/DQ graph: its time in float and in int8."""

    pattern: str  # module paths with the block indices as `*`
    layers: int
    float_ms: float
    int8_ms: float  # the layer's int8 kernel and its share of the Q/DQ nodes that feed it
    kept: bool  # int8 kept: float_ms / int8_ms >= the threshold


@dataclass
class PlacementRecord:
    rule: str
    threshold: float
    profiled: str  # which engines were profiled, how
    groups: list[PlacementGroup]


@dataclass
class PrecisionAutoRecord:
    """What `--precision auto` measured and chose."""

    goal: str  # what the candidates were held to
    accuracy_measured: bool  # False: no labelled images, gated on the parity tolerances on seeded inputs
    winner: str
    precision: str
    reason: str
    statistic: str
    budget: int  # --auto-budget: builds allowed
    builds: int  # builds made
    seconds: float
    settings: dict[str, float]
    candidates: list[PrecisionCandidate]
    dataset: Annotated[str | None, OMITTED_IF_NONE] = None
    images: Annotated[int | None, OMITTED_IF_NONE] = None
    max_drop: Annotated[float | None, OMITTED_IF_NONE] = None  # the goal's figure (with labelled images)
    min_agreement: Annotated[float | None, OMITTED_IF_NONE] = None
    ranking: Annotated[list[LayerNoise] | None, OMITTED_IF_NONE] = None
    placement: Annotated[PlacementRecord | None, OMITTED_IF_NONE] = None
    notes: list[str] = field(default_factory=list)

    def chosen(self) -> PrecisionCandidate:
        return next(c for c in self.candidates if c.status == "chosen")

    @property
    def by_drop(self) -> bool:
        """Accuracy is top-1 against the labels (a drop goal), else agreement (or, unmeasured, seeded cosine)."""
        return self.max_drop is not None


def quality(candidate: PrecisionCandidate, by_drop: bool) -> float | None:
    """The accuracy axis: top-1 (a drop goal) or agreement (an agreement goal), else the seeded cosine."""
    if candidate.accuracy is not None:
        return candidate.accuracy.top1 if by_drop else candidate.accuracy.agreement
    return candidate.seeded.cosine if candidate.seeded is not None else None


def pareto_front(candidates: list[PrecisionCandidate], by_drop: bool) -> set[str]:
    """Labels of the timed candidates that no other timed candidate beats on both latency and accuracy."""
    timed = [(c.label, c.latency_ms.score, q) for c in candidates
             if c.latency_ms is not None and (q := quality(c, by_drop)) is not None]
    return {label for label, ms, acc in timed
            if not any(o_ms <= ms and o_acc >= acc and (o_ms < ms or o_acc > acc) for _, o_ms, o_acc in timed)}


def format_table(record: PrecisionAutoRecord) -> str:
    """The candidates as a table, fastest first, the Pareto front marked `*` and the published one `>`."""
    by_drop = record.by_drop
    axis = "top-1" if by_drop else ("agreement" if record.accuracy_measured else "cosine")
    rows = [("", "candidate", "precision", f"{axis}", "drop" if by_drop else "", "ms", "status", "why")]
    ordered = sorted(record.candidates, key=lambda c: (c.latency_ms is None, c.latency_ms.score if c.latency_ms
                                                       else 0.0))
    for c in ordered:
        value = quality(c, by_drop)
        mark = (">" if c.status == "chosen" else " ") + ("*" if c.pareto else " ")
        drop = f"{100 * c.accuracy.drop:+.2f}%" if by_drop and c.accuracy else ""
        shown = "-" if value is None else (f"{value:.6f}" if axis == "cosine" else f"{100 * value:.2f}%")
        rows.append((mark, c.label, c.precision, shown, drop,
                     f"{c.latency_ms.score:.3f}" if c.latency_ms else "-", c.status, c.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    lines.append(f"  > published, * on the Pareto front of {axis} against latency (ms: {record.statistic})")
    return "\n".join(line.rstrip() for line in lines)
