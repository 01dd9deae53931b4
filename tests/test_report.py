"""The report: fidelity maths, and an HTML page whose images are real, non-empty PNGs."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from deploy.cli import main
from deploy.errors import DeployError
from deploy.report.fidelity import Point, fidelity
from deploy.report.html import write_report

# GMACs of the real variants (registry figures), so the plots look like the real thing.
MACS = {"deit_s": 4.6, "hvt_s_0": 4.574, "hvt_s_1": 2.402, "hvt_s_4": 1.394, "hvt_ti_1": 0.642}


def synthetic_results(latency_per_gmac: dict[str, float], *, accuracy: bool = False) -> dict:
    """One ok row per (model, target) with p50 = GMACs x slope + 1 ms, plus one failed row."""
    rows = []
    for target, slope in latency_per_gmac.items():
        for model, gmacs in MACS.items():
            p50 = gmacs * slope + 1.0
            rows.append({
                "model": model, "family": model.split("_")[0], "target": target, "precision": "fp32", "batch": 1,
                "status": "ok", "error": None, "runs": 20, "macs": round(gmacs * 1e9), "params": 1,
                "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.15, "p99": p50 * 1.3, "mean": p50,
                               "std": 0.1, "min": p50 * 0.9, "max": p50 * 1.4},
                "throughput_ips": 1e3 / p50, "parity": {"passed": True}, "published_top1": 70 + 2 * gmacs,
                "memory": {"rss_peak_mb": 500.0},
                "accuracy": {"dataset": "test", "top1": 0.7 + gmacs / 50, "reference_top1": 0.7 + gmacs / 50}
                if accuracy else None,
            })
    rows.append({"model": "cvt_13", "target": "openvino", "precision": "fp32", "batch": 1, "status": "failed",
                 "error": "simulated <failure>", "latency_ms": None, "macs": 4_500_000_000, "runs": 0})
    return {"schema": 2, "complete": True, "environment": {"processor": "Test CPU", "cpu_count": 2, "threads": 2,
                                                            "device": {"profile": "cpu", "governor": None}},
            "settings": {"runs": 20, "warmup_s": 1.0, "buffers": 4}, "results": rows}


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _images_of(page) -> list[str]:
    parser = _Images()
    parser.feed(page.read_text())
    return parser.sources


def test_report_renders_an_html_page_with_real_pngs(tmp_path):
    results = tmp_path / "results.json"
    data = synthetic_results({"onnxruntime": 4.0, "openvino": 3.0}, accuracy=True)
    data["results"][0]["load_average"] = [3.4, 2.9]  # timed while other work shared the 2 cores
    results.write_text(json.dumps(data))
    page, text = write_report([results], tmp_path / "report")
    sources = _images_of(page)
    assert sorted(sources) == ["accuracy_b1.png", "latency_b1.png", "macs_b1.png"]
    for name in sources:
        data = (page.parent / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
        with Image.open(page.parent / name) as image:
            width, height = image.size
            assert width > 300 and height > 200
            assert len(set(image.convert("L").getdata())) > 10, "not a blank canvas"
    html = page.read_text()
    assert "MAC-to-latency fidelity" in html and "simulated &lt;failure&gt;" in html, "escaped error text"
    assert "1 cell(s) were timed while the load average exceeded the 2 cores" in html
    assert "onnxruntime fp32, batch 1" in text and "hvt_s_4" in text


def test_fidelity_ratios():
    points = [Point("deit_s", "ort", 1, 4_600_000_000, 10.0, 11.0, None, False),
              Point("hvt_s_4", "ort", 1, 1_394_000_000, 5.0, 5.5, None, False),
              Point("hvt_s_0", "ort", 1, 4_574_000_000, 10.0, 11.0, None, False),
              Point("hvt_s_4", "trt", 1, 1_394_000_000, 1.0, 1.0, None, False)]
    tables = fidelity(points, "deit_s")
    rows = {r.model: r for r in tables[("ort", 1)]}
    assert rows["deit_s"].fidelity == pytest.approx(1.0)
    s4 = rows["hvt_s_4"]
    assert s4.mac_ratio == pytest.approx(1.394 / 4.6)
    assert s4.latency_ratio == pytest.approx(0.5)
    assert s4.fidelity == pytest.approx(0.5 / (1.394 / 4.6))
    assert s4.saving_kept == pytest.approx(0.5 / (1 - 1.394 / 4.6))
    assert rows["hvt_s_0"].saving_kept is None, "MAC ratio ~1: no meaningful share"
    assert tables[("trt", 1)] == [], "no baseline on that runtime: no ratios"


def test_report_command_with_two_files_and_another_baseline(tmp_path, capsys):
    cpu, edge = tmp_path / "cpu.json", tmp_path / "edge.json"
    cpu.write_text(json.dumps(synthetic_results({"onnxruntime": 4.0})))
    edge.write_text(json.dumps(synthetic_results({"tensorrt": 0.5})))
    assert main(["report", str(cpu), str(edge), "--out", str(tmp_path / "r"), "--baseline", "hvt_s_0",
                 "--metric", "min"]) == 0
    out = capsys.readouterr().out
    assert "(min latency, baseline hvt_s_0" in out
    assert "cpu: onnxruntime fp32, batch 1" in out and "edge: tensorrt fp32" in out
    assert "accuracy_b1.png" in _images_of(tmp_path / "r" / "index.html"), "published top-1 is plotted"
    line = next(line for line in out.splitlines() if line.strip().startswith("hvt_ti_1"))
    fields = line.split()
    assert float(fields[2]) == pytest.approx((0.642 * 4.0 + 1.0) * 0.9, abs=0.01)  # the min latency
    assert float(fields[3]) == pytest.approx(0.642 / 4.574, abs=1e-3)  # MAC ratio to hvt_s_0


def test_report_of_a_non_results_file_is_one_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DeployError, match=r"bad.json is not a results JSON \(no 'results' list\)"):
        write_report([bad], tmp_path / "r")
    assert not (tmp_path / "r" / "index.html").exists()
