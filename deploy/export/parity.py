"""Comparing an engine's outputs with PyTorch's, kept apart from running either (as Polygraphy does)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Max absolute error as a fraction of the reference's largest |logit|, and a cosine floor.

    Relative to the output scale so one tolerance serves trained logits (~10) and random-init ones (~1).
    """

    max_abs_rel: float | None  # None: not gated (recorded only)
    min_cosine: float
    min_top1: float | None = None
    seeded_gate: bool = True  # False: seeded-input figures are recorded, the gate is real data only


# Low precision on a model with a shipped labelled set is also gated on real images: top-1 agreement with
# PyTorch fp32 on every held-out image (the digits references: 450).
LOW_PRECISIONS = ("fp16", "bf16", "int8")
MIN_AGREEMENT = 0.99
RANDOM_INT8_NOTE = ("int8 on seeded inputs is recorded, not gated: this model has no shipped labelled set, and on "
                    "random inputs (and random-init weights) logits are nearly tied, so agreement says nothing; judge "
                    "it on real images with bench --dataset")


# fp32: kernel reordering alone moves logits by ~1e-6 of their scale; 1e-4 leaves room for 12+ blocks.
# fp16: ~3 significant digits per op (measured ~3e-4 of scale); bf16 ~2 (measured ~1.3e-2).
# int8 on seeded random inputs is a smoke test, not an accuracy claim: random-init logits are small and
# nearly tied, so the same NNCF int8 engine type measured anywhere from 0.03 to 0.55 of the output scale
# (cosine 0.968-0.999) on hvt_s_*/deit_s/cvt_13 depending on the calibration draw, while on the trained
# digits model it kept 100% top-1 agreement on 450 real images. So int8's seeded figures are recorded, and
# it is gated on real images where the model has a shipped labelled set (MIN_AGREEMENT), else not at all.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 0.99999),
    "fp16": Tolerance(2e-2, 0.999),
    "bf16": Tolerance(6e-2, 0.995),
    "int8": Tolerance(None, 0.95, seeded_gate=False),
}


@dataclass(frozen=True)
class ParityReport:
    batch: int
    max_abs: float
    max_abs_rel: float
    max_rel: float
    mean_abs: float
    cosine: float
    top1_agreement: float
    passed: bool
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance) -> ParityReport:
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape:
        return ParityReport(ref.shape[0] if ref.ndim else 0, np.inf, np.inf, np.inf, np.inf, 0.0, 0.0, False,
                            f"output shape {out.shape} differs from PyTorch's {ref.shape}")
    if not np.all(np.isfinite(ref)):
        # PyTorch fp32 itself: the weights (or the inputs) hold NaN/inf, whatever the engine does.
        return ParityReport(ref.shape[0], np.inf, np.inf, np.inf, np.inf, 0.0, 0.0, False,
                            "PyTorch's own outputs are non-finite: the weights or inputs hold NaN/inf, not the engine")
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.isfinite(out).sum())
        return ParityReport(ref.shape[0], np.inf, np.inf, np.inf, np.inf, 0.0, 0.0, False,
                            f"{bad} non-finite outputs where PyTorch's are finite: the engine overflows at this "
                            "precision (try a wider one)")
    diff = np.abs(ref - out)
    scale = float(np.abs(ref).max()) or 1.0
    max_abs = float(diff.max())
    # Elementwise relative error, floored at 1% of the scale so near-zero logits do not dominate.
    max_rel = float((diff / np.maximum(np.abs(ref), 0.01 * scale)).max())
    cosine = _cosine(ref.reshape(ref.shape[0], -1), out.reshape(out.shape[0], -1))
    top1 = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    failures = []
    if tolerance.max_abs_rel is not None and max_abs / scale > tolerance.max_abs_rel:
        failures.append(f"max abs error {max_abs:.3g} is {max_abs / scale:.3g} of the output scale "
                        f"(limit {tolerance.max_abs_rel:g})")
    if cosine < tolerance.min_cosine:
        failures.append(f"cosine {cosine:.6f} < {tolerance.min_cosine}")
    if tolerance.min_top1 is not None and top1 < tolerance.min_top1:
        failures.append(f"top-1 agreement {top1:.3f} < {tolerance.min_top1}")
    return ParityReport(ref.shape[0], max_abs, max_abs / scale, max_rel, float(diff.mean()), cosine, top1,
                        not failures, "; ".join(failures))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Worst per-sample cosine similarity."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    return float(cos.min())


def summarise(reports: list[ParityReport]) -> dict:
    """The worst figures over all compared batches, in the shape results and manifests use."""
    return {
        "passed": all(r.passed for r in reports),
        "max_abs": max(r.max_abs for r in reports),
        "max_abs_rel": max(r.max_abs_rel for r in reports),
        "max_rel": max(r.max_rel for r in reports),
        "cosine": min(r.cosine for r in reports),
        "top1_agreement": min(r.top1_agreement for r in reports),
        "reason": "; ".join(f"batch {r.batch}: {r.reason}" for r in reports if r.reason),
        "batches": [r.to_json() for r in reports],
    }
