from __future__ import annotations

import numpy as np
import pytest

from deploy.export.parity import TOLERANCES, Tolerance, compare, summarise


def logits(batch=4, classes=10, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, classes)).astype(np.float32)


def test_identical_outputs_pass():
    ref = logits()
    report = compare(ref, ref.copy(), TOLERANCES["fp32"])
    assert report.passed and report.max_abs == 0 and report.cosine == pytest.approx(1.0)
    assert report.top1_agreement == 1.0


def test_error_beyond_tolerance_fails_with_reason():
    ref = logits()
    report = compare(ref, ref + 1e-2, TOLERANCES["fp32"])
    assert not report.passed
    assert "max abs error" in report.reason


def test_error_is_judged_relative_to_output_scale():
    ref = logits() * 100
    assert compare(ref, ref + 5e-3, TOLERANCES["fp32"]).passed
    assert not compare(ref / 100, ref / 100 + 5e-3, TOLERANCES["fp32"]).passed


def test_non_finite_outputs_fail():
    ref = logits()
    bad = ref.copy()
    bad[0, 0] = np.inf
    report = compare(ref, bad, TOLERANCES["fp16"])
    assert not report.passed and "non-finite" in report.reason


def test_shape_mismatch_fails():
    assert not compare(logits(4), logits(3), TOLERANCES["fp32"]).passed


def test_top1_agreement_and_its_gate():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = np.array([[1.0, 0.0], [1.0, 0.0]])
    report = compare(ref, out, Tolerance(10.0, -1.0, min_top1=0.9))
    assert report.top1_agreement == 0.5
    assert not report.passed and "top-1 agreement" in report.reason


def test_summarise_keeps_the_worst():
    ref = logits()
    reports = [compare(ref, ref, TOLERANCES["fp32"]), compare(ref, ref + 1.0, TOLERANCES["fp32"])]
    summary = summarise(reports)
    assert not summary["passed"] and summary["max_abs"] == pytest.approx(1.0, rel=1e-6)


def test_int8_is_gated_on_direction_not_on_max_error():
    ref = logits()
    scaled = ref * 1.4  # large absolute error, same direction
    assert compare(ref, scaled, TOLERANCES["int8"]).passed
    assert not compare(ref, -ref, TOLERANCES["int8"]).passed
