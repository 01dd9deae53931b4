"""The regression check: non-zero past the threshold, zero under it."""

from __future__ import annotations

import copy
import json

import pytest

from deploy.bench.results import parse_results
from deploy.cli import main
from deploy.errors import DeployError
from deploy.report.compare import Gate, compare_reports, parse_threshold


def _row(model: str, target: str, p50: float, status: str = "ok") -> dict:
    return {"model": model, "target": target, "precision": "fp32", "batch": 1, "status": status,
            "error": None if status == "ok" else "boom",
            "latency_ms": _latency(p50) if status == "ok" else None}


def _latency(p50: float) -> dict:
    return {"p50": p50, "p90": p50 * 1.2, "p95": p50 * 1.3, "p99": p50 * 1.4, "mean": p50, "std": 0.1,
            "min": p50 * 0.9, "max": p50 * 1.5}


def _report(*rows: dict, processor: str = "Test CPU") -> dict:
    return {"schema": 2, "environment": {"processor": processor}, "results": list(rows)}


OLD = _report(_row("deit_s", "onnxruntime", 10.0), _row("hvt_s_4", "onnxruntime", 4.0),
              _row("hvt_s_4", "openvino", 3.0))


def _write(tmp_path, name: str, report: dict):
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("12.5%", 0.125), ("0.05", 0.05), ("5", 0.05)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


def test_parse_threshold_rejects_nonsense():
    with pytest.raises(DeployError, match="give a percentage"):
        parse_threshold("fast")


def test_compare_exits_non_zero_past_the_threshold_and_zero_under_it(tmp_path, capsys):
    new = copy.deepcopy(OLD)
    new["results"][1]["latency_ms"]["p50"] = 4.3  # +7.5%
    old_path, new_path = _write(tmp_path, "old.json", OLD), _write(tmp_path, "new.json", new)
    assert main(["compare", old_path, new_path, "--max-slowdown", "5%"]) == 1
    out = capsys.readouterr().out
    assert "+7.5%" in out and "SLOWER" in out and "1 regression(s): FAIL" in out
    assert main(["compare", old_path, new_path, "--max-slowdown", "10%"]) == 0
    assert "no regression: OK" in capsys.readouterr().out


def test_faster_and_other_metrics(tmp_path, capsys):
    new = copy.deepcopy(OLD)
    new["results"][0]["latency_ms"].update(p50=8.0, p90=20.0)  # p50 faster, p90 much slower
    old_path, new_path = _write(tmp_path, "old.json", OLD), _write(tmp_path, "new.json", new)
    assert main(["compare", old_path, new_path]) == 0
    assert "faster" in capsys.readouterr().out
    assert main(["compare", old_path, new_path, "--metric", "p90"]) == 1


def test_a_cell_that_now_fails_is_a_regression_but_a_missing_runtime_is_not():
    failed = _report(_row("deit_s", "onnxruntime", 10.0), _row("hvt_s_4", "onnxruntime", 0, status="failed"),
                     _row("hvt_s_4", "openvino", 3.0))
    entries, regressed = compare_reports(parse_results(OLD, "old"), parse_results(failed, "new"), Gate(0.05))
    assert regressed and entries[1].verdict.startswith("now failed")
    unavailable = _report(_row("deit_s", "onnxruntime", 10.0), _row("hvt_s_4", "onnxruntime", 4.0),
                          _row("hvt_s_4", "openvino", 0, status="unavailable"), _row("cvt_13", "torch", 50.0))
    entries, regressed = compare_reports(parse_results(OLD, "old"), parse_results(unavailable, "new"), Gate(0.05))
    assert not regressed
    assert [e.verdict for e in entries] == ["same", "same", "ok -> unavailable", "only in NEW"]


def test_compare_notes_a_different_machine_and_refuses_bad_files(tmp_path, capsys):
    other = copy.deepcopy(OLD)
    other["environment"]["processor"] = "Other CPU"
    assert main(["compare", _write(tmp_path, "a.json", OLD), _write(tmp_path, "b.json", other)]) == 0
    assert "note: processor differs: 'Test CPU' (OLD) vs 'Other CPU' (NEW)" in capsys.readouterr().out
    assert main(["compare", _write(tmp_path, "a.json", OLD), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read results") and len(err.splitlines()) == 1
