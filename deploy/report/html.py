"""`python -m deploy report results.json --out DIR`: an HTML page with PNG plots and the fidelity table.

Reads results files (`deploy.bench.results`), draws `plots`, computes `fidelity`, and writes
`DIR/index.html` beside the PNGs. Every file is made in a hidden staging folder inside DIR and moved into
place only once all of them are made, the page last: a report that fails leaves DIR as it was, never a
half-drawn PNG or a page naming plots that are not there.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import models

from ..bench.formats import contended, format_or_dash
from ..bench.results import MemoryRecord, ResultRow, ResultsDocument, load_results
from ..errors import DeployError
from ..fileio import ensure_writable, write_error
from . import plots
from .fidelity import FidelityRow, FidelityTables, Point, Series, fidelity, fidelity_text, kept_text
from .profiles import ProfiledCell, plot_profiles, profiles_html


@dataclass(frozen=True)
class LabelledRow:
    """A results row with the runtime label the report groups it under."""

    runtime: str  # "<target> <precision>", prefixed by the file's name when several files are merged
    row: ResultRow


@dataclass(frozen=True)
class FileHeader:
    file: str
    document: ResultsDocument


def load_points(paths: list[Path], metric: str = "p50") -> tuple[list[Point], list[LabelledRow], list[FileHeader]]:
    """Ok cells of every file as Points, every row (for the table), and each file's header."""
    documents = [(Path(p), load_results(p)) for p in paths]
    labelled = len(documents) > 1
    points, rows, headers = [], [], []
    for path, document in documents:
        headers.append(FileHeader(str(path), document))
        for row in document.results:
            runtime = f"{row.target} {row.precision}"
            runtime = f"{row.device}: {runtime}" if row.device else runtime  # a cluster run: each device its own series
            runtime = f"{path.stem}: {runtime}" if labelled else runtime
            rows.append(LabelledRow(runtime, row))
            if row.status == "ok" and row.latency_ms and row.macs:
                points.append(_point(row, runtime, metric))
    return points, rows, headers


def _point(row: ResultRow, runtime: str, metric: str) -> Point:
    assert row.latency_ms is not None and row.macs is not None
    measured = row.accuracy.top1 if row.accuracy else None
    top1 = 100 * measured if measured is not None else row.published_top1
    if measured is not None and row.accuracy is not None:
        dataset: str | None = Path(row.accuracy.dataset).name or row.accuracy.dataset
    else:
        dataset = _published_dataset(row.model) if top1 is not None else None
    return Point(row.model, runtime, row.batch, row.macs, row.latency_ms.get(metric), row.latency_ms.p90, top1,
                 measured is not None, dataset)


def _published_dataset(model: str) -> str | None:
    """What a model's published top-1 was measured on: its shipped set (the `*_digits` references), else ImageNet."""
    try:
        info = models.get_model_info(model)
    except models.ModelError:  # a results file from another version's zoo: say nothing rather than guess
        return None
    return info.reference_dataset or "ImageNet"


METRICS = ("p50", "p90", "p95", "p99", "mean", "min")


def write_report(paths: list[Path], out: Path, baseline: str = "deit_s", metric: str = "p50") -> tuple[Path, str]:
    """Write OUT/index.html and its PNGs; returns the page and the fidelity table as text.

    `metric` is the latency statistic plotted and compared: p50 by default; `min` is the most robust to
    other processes sharing the CPU (contention only ever adds time).
    """
    if metric not in METRICS:
        raise DeployError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    points, rows, headers = load_points(paths, metric)
    if not rows:
        raise DeployError(f"{', '.join(map(str, paths))}: no results to report")
    out = ensure_writable(out)
    tables = fidelity(points, baseline)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".report-staging-") as staging:
            stage = Path(staging)
            figures = _plots(points, rows, stage, baseline, metric)
            (stage / "index.html").write_text(_html(headers, rows, figures, tables, baseline, metric),
                                              encoding="utf-8")
            for name in [*figures, "index.html"]:  # each a rename within one folder: whole, the page last
                os.replace(stage / name, out / name)
    except OSError as exc:  # a full disk, most likely: nothing was moved into OUT
        raise write_error(out / Path(exc.filename or "index.html").name, exc) from None
    return out / "index.html", fidelity_text(tables, baseline, metric)


def _plots(points: list[Point], rows: list[LabelledRow], folder: Path, baseline: str, metric: str) -> list[str]:
    """Draw every plot into `folder`; their file names."""
    figures = []
    for batch in sorted({p.batch for p in points}):
        plots.plot_latency(points, folder / f"latency_b{batch}.png", batch, metric=metric)
        plots.plot_macs(points, folder / f"macs_b{batch}.png", batch, baseline, metric=metric)
        figures += [f"latency_b{batch}.png", f"macs_b{batch}.png"]
        if any(p.top1 is not None for p in points if p.batch == batch):
            plots.plot_accuracy(points, folder / f"accuracy_b{batch}.png", batch, metric=metric)
            figures.append(f"accuracy_b{batch}.png")
    return figures + plot_profiles(_profiled(rows), folder)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}.bad{color:#b00}"
        "code{background:#f4f4f4}")


def _html(headers: list[FileHeader], rows: list[LabelledRow], figures: list[str], tables: FidelityTables,
          baseline: str, metric: str) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>vit-deploy benchmark report</title>",
             f"<style>{_CSS}</style></head><body><h1>vit-deploy benchmark report</h1>"]
    parts += [_environment_html(h) for h in headers]
    parts.append("<h2>Plots</h2>")
    parts += [f"<img src='{html.escape(name)}' alt='{html.escape(name)}'>" for name in figures]
    parts.append(f"<h2>MAC-to-latency fidelity ({metric} latency, baseline {html.escape(baseline)})</h2>"
                 "<p>fidelity = latency "
                 "ratio / MAC ratio (1.00: latency follows MACs; above 1: slower than the MACs promise). "
                 "Saving kept = (1 &minus; latency ratio) / (1 &minus; MAC ratio).</p>")
    parts += [_fidelity_html(series, table, baseline) for series, table in sorted(tables.items())]
    parts.append(_devices_html(rows))
    parts.append(profiles_html(_profiled(rows)))
    parts.append("<h2>Results</h2>" + _contention_html(headers, rows) + _results_html(rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def _profiled(rows: list[LabelledRow]) -> list[ProfiledCell]:
    return [ProfiledCell(r.runtime, r.row.model, r.row.batch, r.row.layer_profile) for r in rows
            if r.row.layer_profile is not None]


def _environment_html(header: FileHeader) -> str:
    document = header.document
    env, settings = document.environment, document.settings
    device = env.device or {}
    cpu = device.get("cpu") or {}
    facts = {
        "file": header.file, "created": document.created, "complete": document.complete,
        "device profile": device.get("profile"), "processor": env.processor,
        "cores / threads": f"{env.cpu_count} / {cpu.get('threads', env.threads)}",
        "governor": device.get("governor"), "nvpmodel": device.get("nvpmodel"),
        "jetson_clocks": (device.get("jetson_clocks") or {}).get("on") if device.get("jetson_clocks") else None,
        "gpu": (device.get("gpu") or {}).get("name") if device.get("gpu") else None,
        "runtimes": ", ".join(f"{name} {version}" for name, version in env.runtimes.items() if version),
        "vit-deploy": env.vit_deploy,
        "timing": (f"warm-up {settings.warmup_s} s, "
                   + (f"{settings.duration_s} s per cell" if settings.duration_s else f"{settings.runs} runs per cell")
                   + f", {settings.buffers} input buffers"),
        "dataset": settings.dataset,
    }
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in facts.items() if v not in (None, ""))
    return f"<h2>Run</h2><table>{cells}</table>"


def _fidelity_html(series: Series, table: list[FidelityRow], baseline: str) -> str:
    title = f"<h3>{html.escape(series[0])}, batch {series[1]}</h3>"
    if not table:
        return title + f"<p>No ok {html.escape(baseline)} cell on this runtime: no ratios.</p>"
    head = "<tr><th>model</th><th>GMACs</th><th>latency ms</th><th>MAC ratio</th><th>latency ratio</th>" \
           "<th>fidelity</th><th>saving kept</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r.model)}</td><td>{r.macs_g:.3f}</td><td>{r.latency_ms:.2f}</td>"
        f"<td>{r.mac_ratio:.3f}</td><td>{r.latency_ratio:.3f}</td><td>{r.fidelity:.2f}</td>"
        f"<td>{kept_text(r.saving_kept)}</td></tr>"
        for r in table)
    return f"{title}<table>{head}{body}</table>"


def _contention_html(headers: list[FileHeader], rows: list[LabelledRow]) -> str:
    cores = max((h.document.environment.cpu_count or 0 for h in headers), default=0)
    busy = contended([labelled.row for labelled in rows], cores)
    if not busy:
        return ""
    return (f"<p class='bad'>{len(busy)} cell(s) were timed while the load average exceeded the {cores} cores "
            "(see the load column): other processes competed for the CPU and those latencies are inflated.</p>")


def _devices_html(rows: list[LabelledRow]) -> str:
    """A cluster run's per-device view: each device label, the nodes that ran its cells, and how they went."""
    devices: dict[str, list[ResultRow]] = {}
    for labelled in rows:
        if labelled.row.device:
            devices.setdefault(labelled.row.device, []).append(labelled.row)
    if not devices:
        return ""
    head = "<tr><th>device</th><th>node (host)</th><th>detected</th><th>processor</th><th>ok</th><th>failed</th>" \
           "<th>unavailable</th><th>median p50 ms</th></tr>"
    lines = []
    for device, members in sorted(devices.items()):
        by_node: dict[str, list[ResultRow]] = {}
        for row in members:
            by_node.setdefault(row.node.node_id if row.node else "-", []).append(row)
        for node_rows in by_node.values():
            node = node_rows[0].node
            record = node.device if node else {}
            p50s = sorted(r.latency_ms.p50 for r in node_rows if r.status == "ok" and r.latency_ms)
            cells = [device, f"{node.node_id[:12]} ({node.host})" if node else "-",
                     ", ".join((record.get("detected") or {}).get("kinds", [])) or "-",
                     (record.get("cpu") or {}).get("model") or "-",
                     *(sum(r.status == status for r in node_rows) for status in ("ok", "failed", "unavailable")),
                     format_or_dash(p50s[len(p50s) // 2] if p50s else None, ".2f")]
            lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<h2>Devices</h2><p>Cells per device label and node; the plots and fidelity tables keep each "
            "device's runtimes apart.</p><table>" + head + "".join(lines) + "</table>")


def _results_html(rows: list[LabelledRow]) -> str:
    head = ["model", "runtime", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "std ms", "img/s", "runs",
            "GMACs", "peak RSS MB (+engine)", "parity", "top-1", "torch top-1", "load", "error"]
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for labelled in rows:
        r, lat, acc = labelled.row, labelled.row.latency_ms, labelled.row.accuracy
        parity = r.parity.passed if r.parity else None
        cells = [r.model, labelled.runtime, r.batch, r.status,
                 *(format_or_dash(lat.get(k) if lat else None, ".2f") for k in ("p50", "p90", "p99", "std")),
                 f"{r.throughput_ips:.1f}" if r.throughput_ips else "-", r.runs or "-",
                 format_or_dash(r.macs / 1e9 if r.macs is not None else None, ".3f"), _memory(r.memory),
                 {True: "pass", False: "FAIL", None: "-"}.get(parity, "-"),
                 _percent(acc.top1 if acc else None), _percent(acc.reference_top1 if acc else None),
                 "/".join(format_or_dash(v, ".1f") for v in r.load_average or []) or "-", r.error or ""]
        cls = " class='bad'" if r.status != "ok" else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(lines) + "</table>"


def _memory(memory: MemoryRecord | None) -> str:
    if memory is None or memory.rss_peak_mb is None:
        return "-"
    growth = memory.rss_growth_mb
    return f"{memory.rss_peak_mb:.0f}" + (f" (+{growth:.0f})" if growth is not None else "")


def _percent(value: float | None) -> str:
    return format_or_dash(100 * value if value is not None else None, ".2f")


