"""The accuracy goal a low-precision engine is held to on labelled images, against PyTorch fp32 on the same images.

Two forms, one at a time:
- `--min-agreement 99%`: the engine's top-1 equals PyTorch fp32's on at least that share of the images (the
  default goal, and the real-data gate every low-precision export has had: `parity.MIN_AGREEMENT`);
- `--max-drop 1%`: the engine's top-1 accuracy (against the labels) is at most that much below PyTorch fp32's,
  as an absolute difference of top-1 (PyTorch 81.2 %, engine 80.3 %: a drop of 0.9 %).

A goal can only be measured on enough images: with N images one image moves top-1 (or agreement) by 1/N, so a
tolerance t needs N >= 1/t images, or a single image already exceeds it (`images_needed`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import DeployError
from .parity import MIN_AGREEMENT


def parse_share(text: str | float, flag: str) -> float:
    """'1%' -> 0.01, '0.99' -> 0.99 (a bare number is a fraction, at most 1); one error line otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, percent = float(text), False
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*", str(text))
        if not match:
            raise DeployError(f"{flag} {text!r}: give a percentage such as 1% or a fraction such as 0.01")
        value, percent = float(match.group(1)), bool(match.group(2))
    if percent:
        return value / 100
    if value > 1:
        raise DeployError(f"{flag} {text!r}: a bare number is a fraction between 0 and 1; write {value:g}% for "
                          "a percentage")
    return value


@dataclass(frozen=True)
class AccuracyGoal:
    """What an engine must keep on labelled images: a largest top-1 drop, or a smallest top-1 agreement."""

    max_drop: float | None = None  # absolute top-1 drop against PyTorch fp32, as a fraction
    min_agreement: float | None = None  # top-1 agreement with PyTorch fp32, as a fraction

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.min_agreement is not None:
            raise DeployError("--max-drop and --min-agreement are two goals: give one of them")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise DeployError(f"--max-drop {100 * self.max_drop:g}% is out of range: give at least 0% and less "
                              "than 100%")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 1:
            raise DeployError(f"--min-agreement {100 * self.min_agreement:g}% is out of range: give more than 0% "
                              "and at most 100%")

    @classmethod
    def of(cls, max_drop: str | float | None = None, min_agreement: str | float | None = None) -> AccuracyGoal:
        """From the command line's values (percentages or fractions); the default goal when neither is given."""
        drop = parse_share(max_drop, "--max-drop") if max_drop is not None else None
        agreement = parse_share(min_agreement, "--min-agreement") if min_agreement is not None else None
        if drop is None and agreement is None:
            return DEFAULT_GOAL
        return cls(drop, agreement)

    @property
    def tolerance(self) -> float:
        """The share of the images the goal lets the engine lose."""
        return self.max_drop if self.max_drop is not None else 1 - (self.min_agreement or MIN_AGREEMENT)

    def images_needed(self) -> int:
        """The fewest images on which the goal is measurable: one image must weigh no more than the tolerance."""
        tolerance = self.tolerance
        return 1 if tolerance <= 0 else math.ceil(1 / tolerance - 1e-9)

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"top-1 drop <= {_percent(self.max_drop)} against PyTorch fp32"
        return f"top-1 agreement with PyTorch fp32 >= {_percent(self.min_agreement or MIN_AGREEMENT)}"

    def miss(self, top1: float, reference_top1: float, agreement: float) -> str | None:
        """Why an engine with these figures misses the goal, or None if it meets it."""
        if self.max_drop is not None:
            drop = reference_top1 - top1
            # Top-1 is a count over the same images: compare with a margin below one image's weight.
            if drop > self.max_drop + 1e-9:
                return (f"top-1 {_percent(top1)} is {_percent(drop)} below PyTorch's {_percent(reference_top1)} "
                        f"(at most {_percent(self.max_drop)})")
            return None
        floor = self.min_agreement or MIN_AGREEMENT
        if agreement < floor - 1e-9:
            return f"top-1 agreement {_percent(agreement)} with PyTorch < {_percent(floor)}"
        return None

    def check_images(self, images: int, dataset: str) -> None:
        """One error line when `dataset` has too few images to measure this goal."""
        needed = self.images_needed()
        if images < needed:
            raise DeployError(f"{dataset} has {images} labelled image(s); measuring {self.describe()} needs at "
                              f"least {needed} (one image is {_percent(1 / images)} of {images}): give more images "
                              "or a looser goal")


DEFAULT_GOAL = AccuracyGoal(min_agreement=MIN_AGREEMENT)


def _percent(share: float) -> str:
    return f"{100 * share:.4g}%"
