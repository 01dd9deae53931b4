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


# ---------------------------------------------------------------- readable plots

# The four digits references as a real run measures them (GMACs from the registry; ms as timed on this machine):
# deit_digits and resnas_digits land on nearly the same spot of the accuracy plot.
DIGITS = {"hvt_digits": (0.005617, 0.47, 99.78), "deit_digits": (0.01088, 0.41, 98.67),
          "cvt_digits": (0.00687, 0.62, 99.11), "resnas_digits": (0.005976, 0.42, 98.89)}


def _digits_points(measured: bool) -> list[Point]:
    return [Point(model, runtime, 1, round(gmacs * 1e9), latency * scale, latency * scale * 1.1, top1, measured,
                  "digits")
            for runtime, scale in (("onnxruntime fp32", 1.0), ("openvino fp32", 1.3))
            for model, (gmacs, latency, top1) in DIGITS.items()]


def _overlaps(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)]


def _tick_label_boxes(fig, axis_name: str):
    """The drawn tick labels (major and minor, inside the view) of one axis of the figure's axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axis = getattr(fig.axes[0], f"{axis_name}axis")
    low, high = sorted(axis.get_view_interval())
    return [(tick.label1.get_text(), tick.label1.get_window_extent(renderer))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks()
            if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high]


@pytest.mark.parametrize("decades", [0.3, 0.8, 1.5, 3.0, 5.0])
def test_log_axis_tick_labels_never_run_together(decades):
    """Labelling every minor tick drew `0.0040.0050.006...`: the labels drawn never overlap, at any span."""
    from deploy.report.plots import macs_figure

    low = 0.004
    points = [Point(f"m{i}", "onnxruntime fp32", 1, round(low * 10 ** (decades * i / 4) * 1e9), 0.4 * (1 + i), 0.5,
                    None, False) for i in range(5)]
    fig = macs_figure(points, 1, "m0")
    for axis_name in ("x", "y"):
        labels = _tick_label_boxes(fig, axis_name)
        assert len(labels) >= 2, f"{axis_name}: the axis is labelled"
        assert _overlaps([box for _, box in labels]) == [], [text for text, _ in labels]
    labels = [text for text, _ in _tick_label_boxes(fig, "x")]
    assert all("e" not in text for text in labels), f"plain numbers: {labels}"


@pytest.mark.parametrize(("baseline", "line"), [("deit_digits", True), ("deit_s", False)])
def test_the_macs_plot_names_its_dashed_line_only_when_it_draws_one(baseline, line):
    from deploy.report.plots import macs_figure

    ax = macs_figure(_digits_points(True), 1, baseline).axes[0]
    dashed = [artist for artist in ax.lines if artist.get_linestyle() == "--"]
    assert bool(dashed) == line
    assert ("dashed: latency ∝ MACs through deit_digits" in ax.get_title()) == line
    assert ("no deit_s cell, so no latency ∝ MACs line" in ax.get_title()) == (not line)


@pytest.mark.parametrize("measured", [True, False])
def test_model_names_on_the_scatter_plots_do_not_collide(measured):
    from deploy.report.plots import accuracy_figure, macs_figure

    points = _digits_points(measured)
    for fig in (macs_figure(points, 1, "deit_digits"), accuracy_figure(points, 1)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        names = {text.get_text(): text.get_window_extent(renderer) for text in ax.texts}
        assert set(names) == set(DIGITS), "one name per model"
        boxes = list(names.values())
        assert _overlaps(boxes) == [], names
        legend = ax.get_legend().get_window_extent(renderer)
        frame = ax.get_window_extent(renderer)
        assert not any(box.overlaps(legend) for box in boxes), "no name under the legend"
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


@pytest.mark.parametrize("measured", [True, False])
def test_precision_auto_candidate_names_do_not_collide(measured):
    """hvt_digits' candidates as a bench run timed them: the three int8 calibrations within 0.01 ms and at the same
    agreement were named on top of one another; the axis ran above what agreement or cosine can reach."""
    from deploy.export.precision_auto.record import (
        CandidateAccuracy,
        CandidateSeeded,
        PrecisionAutoRecord,
        PrecisionCandidate,
    )
    from deploy.report.precision import AutoCell, auto_figure
    from deploy.timing import CandidateLatency

    def candidate(label: str, precision: str, ms: float, agreement: float) -> PrecisionCandidate:
        latency = CandidateLatency(ms, ms, ms, ms, ms, 0.0, ms, ms, ms, [ms])
        accuracy = CandidateAccuracy("digits", 450, 0.9978, 0.9978, agreement) if measured else None
        return PrecisionCandidate(label, precision, precision, "passed", "meets the goal", accuracy=accuracy,
                                  seeded=CandidateSeeded(1e-3, agreement), latency_ms=latency)

    candidates = [candidate("fp32", "fp32", 0.193, 1.0), candidate("fp16", "fp16", 0.406, 1.0),
                  candidate("int8 minmax", "int8", 0.538, 1.0), candidate("int8 entropy", "int8", 0.547, 1.0),
                  candidate("int8 percentile", "int8", 0.544, 0.9978)]
    record = PrecisionAutoRecord("agreement >= 99%", measured, "fp32", "fp32", "fastest", "best round", 12, 5, 9.0,
                                 {}, candidates, min_agreement=0.99 if measured else None)
    fig = auto_figure([AutoCell("onnxruntime", "hvt_digits", record), AutoCell("onnxruntime", "deit_digits", record)],
                      "onnxruntime")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:2]:
        names = {text.get_text(): text.get_window_extent(renderer) for text in ax.texts}
        assert set(names) == {c.label for c in candidates}, "every candidate named once"
        assert _overlaps(list(names.values())) == [], names
        frame = ax.get_window_extent(renderer)
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
                   for b in names.values())
        assert ax.get_ylim()[1] <= (100.1 if measured else 1.001), ax.get_ylim()


def test_the_accuracy_legend_names_the_dataset_of_each_top1(tmp_path):
    """The digits references' published top-1 is on their held-out digits, not ImageNet; a zoo model's is ImageNet."""
    from deploy.report.html import load_points
    from deploy.report.plots import accuracy_figure

    data = synthetic_results({"onnxruntime": 4.0})
    digits = [{**data["results"][0], "model": name, "macs": round(gmacs * 1e9), "published_top1": top1}
              for name, (gmacs, _, top1) in DIGITS.items()]
    data["results"] = [*data["results"][:2], *digits]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    points, _, _ = load_points([path])
    legend = [t.get_text() for t in accuracy_figure(points, 1).axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["onnxruntime fp32: published top-1 on ImageNet",
                              "onnxruntime fp32: published top-1 on digits"]
    measured = synthetic_results({"onnxruntime": 4.0}, accuracy=True)
    path.write_text(json.dumps(measured))
    points, _, _ = load_points([path])
    legend = [t.get_text() for t in accuracy_figure(points, 1).axes[0].get_legend().get_texts()]
    assert legend == ["onnxruntime fp32: measured top-1 on test"]
