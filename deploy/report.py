"""`python -m deploy report results.json --out DIR`: an HTML page with PNG plots and the fidelity table.

Plots (matplotlib, Agg backend), one set per batch size:
- latency per model per runtime (bars: p50, or `--metric`; whiskers up to p90);
- latency against MACs, with each runtime's ideal line through the baseline (latency proportional to
  MACs): points below the line beat the MAC count, points above lose part of the MAC saving;
- accuracy against latency: the engine's measured top-1 where the run had a dataset, else the
  published ImageNet top-1 (hollow markers).

MAC-to-latency fidelity: per runtime, each model's latency ratio to the baseline (deit_s unless
`--baseline`) next to its MAC ratio. fidelity = latency ratio / MAC ratio (1.00: latency follows MACs;
above 1: the model is slower than its MACs promise); "saving kept" = (1 - latency ratio) / (1 - MAC
ratio), the share of the MAC saving that shows up as latency saving.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DeployError
from .fileio import ensure_writable
from .results import format_or_dash, load_results

# A MAC ratio this close to 1 makes "saving kept" a division by ~0: not shown.
MIN_SAVING = 0.05


@dataclass
class Point:
    """One ok cell, as the plots and tables see it."""

    model: str
    runtime: str  # "<target> <precision>", prefixed by the file's name when several files are merged
    batch: int
    macs: int
    latency: float  # ms, the metric the report was asked for (p50 by default)
    p90: float
    top1: float | None  # percent
    top1_measured: bool


Rows = list[dict[str, Any]]


def load_points(paths: list[Path], metric: str = "p50") -> tuple[list[Point], Rows, Rows]:
    """Ok cells of every file as Points, every row (for the table), and each file's header."""
    reports = [(Path(p), load_results(p)) for p in paths]
    labelled = len(reports) > 1
    points, rows, headers = [], [], []
    for path, report in reports:
        headers.append({"file": str(path), **{k: report.get(k) for k in ("environment", "settings", "created",
                                                                       "updated", "complete")}})
        for row in report["results"]:
            runtime = f"{row['target']} {row['precision']}"
            runtime = f"{path.stem}: {runtime}" if labelled else runtime
            rows.append({**row, "runtime": runtime})
            if row.get("status") == "ok" and row.get("latency_ms"):
                points.append(_point(row, runtime, metric))
    return points, rows, headers


def _point(row: dict[str, Any], runtime: str, metric: str) -> Point:
    acc = row.get("accuracy") or {}
    measured = acc.get("top1")
    published = row.get("published_top1")
    return Point(row["model"], runtime, int(row["batch"]), int(row["macs"]), row["latency_ms"][metric],
                 row["latency_ms"]["p90"], 100 * measured if measured is not None else published,
                 measured is not None)


# ---------------------------------------------------------------- fidelity

def fidelity(points: list[Point], baseline: str) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(runtime, batch) -> rows of model, MAC ratio, latency ratio, fidelity, saving kept; [] without baseline."""
    by_series: dict[tuple[str, int], list[Point]] = defaultdict(list)
    for p in points:
        by_series[(p.runtime, p.batch)].append(p)
    tables = {}
    for series, members in by_series.items():
        base = next((p for p in members if p.model == baseline), None)
        if base is None:
            tables[series] = []
            continue
        rows = []
        for p in sorted(members, key=lambda p: (p.macs, p.model)):
            mac_ratio, lat_ratio = p.macs / base.macs, p.latency / base.latency
            kept = (1 - lat_ratio) / (1 - mac_ratio) if abs(1 - mac_ratio) >= MIN_SAVING else None
            rows.append({"model": p.model, "macs_g": p.macs / 1e9, "latency_ms": p.latency, "mac_ratio": mac_ratio,
                         "latency_ratio": lat_ratio, "fidelity": lat_ratio / mac_ratio, "saving_kept": kept})
        tables[series] = rows
    return tables


def fidelity_text(tables: dict[tuple[str, int], list[dict[str, Any]]], baseline: str, metric: str = "p50") -> str:
    lines = [f"MAC-to-latency fidelity ({metric} latency, baseline {baseline}; fidelity = latency ratio / MAC ratio, "
             "1.00 = latency follows MACs; saving kept = share of the MAC saving seen in latency)"]
    for (runtime, batch), rows in sorted(tables.items()):
        lines.append(f"\n{runtime}, batch {batch}")
        if not rows:
            lines.append(f"  (no ok {baseline} cell on this runtime: no ratios)")
            continue
        lines.append(f"  {'model':<18} {'GMACs':>7} {metric + ' ms':>9} {'MAC ratio':>9} {'lat ratio':>9} "
                     f"{'fidelity':>8} {'saving kept':>11}")
        for r in rows:
            kept = _kept(r["saving_kept"])
            lines.append(f"  {r['model']:<18} {r['macs_g']:7.3f} {r['latency_ms']:9.2f} {r['mac_ratio']:9.3f} "
                         f"{r['latency_ratio']:9.3f} {r['fidelity']:8.2f} {kept:>11}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise DeployError("the report's plots need matplotlib: pip install -e .[report]") from None

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _colours(runtimes: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cycle = plt.get_cmap("tab10")
    return {r: cycle(i % 10) for i, r in enumerate(runtimes)}


def plot_latency(points: list[Point], path: Path, batch: int, metric: str = "p50") -> None:
    plt = _pyplot()
    chosen = [p for p in points if p.batch == batch]
    model_names = _models_by_macs(chosen)
    runtimes = sorted({p.runtime for p in chosen})
    colours = _colours(runtimes)
    width = 0.8 / max(len(runtimes), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(model_names) + 2), 4.5))
    for i, runtime in enumerate(runtimes):
        xs, heights, whiskers = [], [], []
        for j, name in enumerate(model_names):
            p = next((p for p in chosen if p.runtime == runtime and p.model == name), None)
            if p:
                xs.append(j + (i - (len(runtimes) - 1) / 2) * width)
                heights.append(p.latency)
                whiskers.append(max(p.p90 - p.latency, 0.0))
        ax.bar(xs, heights, width, yerr=[[0] * len(xs), whiskers], capsize=2, label=runtime, color=colours[runtime])
    ax.set_xticks(range(len(model_names)), model_names, rotation=30, ha="right")
    ax.set_ylabel(f"latency {metric} (ms); whisker to p90")
    ax.set_title(f"Latency per model and runtime (batch {batch})")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_macs(points: list[Point], path: Path, batch: int, baseline: str, metric: str = "p50") -> None:
    plt = _pyplot()
    chosen = [p for p in points if p.batch == batch]
    runtimes = sorted({p.runtime for p in chosen})
    colours = _colours(runtimes)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    span = [min(p.macs for p in chosen) / 1e9 * 0.8, max(p.macs for p in chosen) / 1e9 * 1.25]
    for runtime in runtimes:
        series = sorted((p for p in chosen if p.runtime == runtime), key=lambda p: p.macs)
        ax.plot([p.macs / 1e9 for p in series], [p.latency for p in series], "o", color=colours[runtime], label=runtime)
        base = next((p for p in series if p.model == baseline), None)
        if base:
            slope = base.latency / (base.macs / 1e9)
            ax.plot(span, [slope * x for x in span], "--", color=colours[runtime], alpha=0.6, linewidth=1)
    _label(ax, [(p.model, p.macs / 1e9, p.latency) for p in _slowest_per_model(chosen)])
    _plain_log_axes(ax, x=True, y=True)
    ax.set_xlabel("GMACs (this implementation, batch 1)")
    ax.set_ylabel(f"latency {metric} (ms)")
    ax.set_title(f"Latency against MACs (batch {batch}); dashed: latency ∝ MACs through {baseline}")
    ax.legend(fontsize="small")
    ax.grid(which="both", alpha=0.3)
    _save(fig, path)


def plot_accuracy(points: list[Point], path: Path, batch: int, metric: str = "p50") -> None:
    plt = _pyplot()
    chosen = [p for p in points if p.batch == batch and p.top1 is not None]
    runtimes = sorted({p.runtime for p in chosen})
    colours = _colours(runtimes)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for runtime in runtimes:
        for measured in (True, False):
            series = [p for p in chosen if p.runtime == runtime and p.top1_measured == measured]
            if series:
                ax.plot([p.latency for p in series], [p.top1 for p in series], "o", color=colours[runtime],
                        markerfacecolor=colours[runtime] if measured else "none",
                        label=f"{runtime} ({'measured' if measured else 'published'} top-1)")
    _label(ax, [(p.model, p.latency, p.top1) for p in _slowest_per_model(chosen)])
    _plain_log_axes(ax, x=True, y=False)
    ax.set_xlabel(f"latency {metric} (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Accuracy against latency (batch {batch}); hollow: published ImageNet top-1")
    ax.legend(fontsize="small")
    ax.grid(which="both", alpha=0.3)
    _save(fig, path)


def _slowest_per_model(points: list[Point]) -> list[Point]:
    # One label per model, on its slowest point: labels on every runtime's point would pile up.
    return list({p.model: p for p in sorted(points, key=lambda p: p.latency)}.values())


def _label(ax, items: list[tuple[str, float, float]]) -> None:
    # Models with near-equal coordinates (deit_s and hvt_s_0 have the same MACs): alternate above/below.
    for i, (name, x, y) in enumerate(sorted(items, key=lambda item: (item[1], item[2]))):
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4 if i % 2 == 0 else -10), textcoords="offset points")


def _plain_log_axes(ax, x: bool, y: bool) -> None:
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for on, axis, scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            scale("log")
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)


def _models_by_macs(points: list[Point]) -> list[str]:
    return [name for _, name in sorted({(p.macs, p.model) for p in points})]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


# ---------------------------------------------------------------- the page

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
    figures = []
    for batch in sorted({p.batch for p in points}):
        plots = [(f"latency_b{batch}.png", plot_latency, ()), (f"macs_b{batch}.png", plot_macs, (baseline,))]
        if any(p.top1 is not None for p in points if p.batch == batch):
            plots.append((f"accuracy_b{batch}.png", plot_accuracy, ()))
        for name, plot, extra in plots:
            plot(points, out / name, batch, *extra, metric=metric)
            figures.append(name)
    page = out / "index.html"
    page.write_text(_html(headers, rows, figures, tables, baseline, metric))
    return page, fidelity_text(tables, baseline, metric)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}.bad{color:#b00}"
        "code{background:#f4f4f4}")


def _html(headers, rows, figures, tables, baseline, metric) -> str:
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
    parts.append("<h2>Results</h2>" + _contention_html(headers, rows) + _results_html(rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def _environment_html(header: dict[str, Any]) -> str:
    env, settings = header.get("environment") or {}, header.get("settings") or {}
    device = env.get("device") or {}
    cpu = device.get("cpu") or {}
    facts = {
        "file": header["file"], "created": header.get("created"), "complete": header.get("complete"),
        "device profile": device.get("profile"), "processor": env.get("processor"),
        "cores / threads": f"{env.get('cpu_count')} / {cpu.get('threads', env.get('threads'))}",
        "governor": device.get("governor"), "nvpmodel": device.get("nvpmodel"),
        "jetson_clocks": (device.get("jetson_clocks") or {}).get("on") if device.get("jetson_clocks") else None,
        "gpu": (device.get("gpu") or {}).get("name") if device.get("gpu") else None,
        "runtimes": ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in env.items() if k.startswith("runtime:") and v),
        "timing": (f"warm-up {settings.get('warmup_s')} s, "
                   + (f"{settings.get('duration_s')} s per cell" if settings.get("duration_s")
                      else f"{settings.get('runs')} runs per cell") + f", {settings.get('buffers')} input buffers"),
        "dataset": settings.get("dataset"),
    }
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in facts.items() if v not in (None, ""))
    return f"<h2>Run</h2><table>{cells}</table>"


def _fidelity_html(series: tuple[str, int], table: list[dict[str, Any]], baseline: str) -> str:
    title = f"<h3>{html.escape(series[0])}, batch {series[1]}</h3>"
    if not table:
        return title + f"<p>No ok {html.escape(baseline)} cell on this runtime: no ratios.</p>"
    head = "<tr><th>model</th><th>GMACs</th><th>latency ms</th><th>MAC ratio</th><th>latency ratio</th>" \
           "<th>fidelity</th><th>saving kept</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{r['macs_g']:.3f}</td><td>{r['latency_ms']:.2f}</td>"
        f"<td>{r['mac_ratio']:.3f}</td><td>{r['latency_ratio']:.3f}</td><td>{r['fidelity']:.2f}</td>"
        f"<td>{_kept(r['saving_kept'])}</td></tr>"
        for r in table)
    return f"{title}<table>{head}{body}</table>"


def contended(rows: list[dict[str, Any]], cores: int | None) -> list[dict[str, Any]]:
    """Cells timed while the 1-minute load average exceeded the core count.

    The benchmark alone keeps at most `cores` threads busy, so a higher load means other processes shared
    the CPU. (The load average lags by about a minute: a hint, not a proof.)
    """
    def peak(row: dict[str, Any]) -> float:
        return max((v for v in row.get("load_average") or [] if v is not None), default=0.0)

    return [r for r in rows if cores and peak(r) > cores]


def _contention_html(headers: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    cores = max(((h.get("environment") or {}).get("cpu_count") or 0 for h in headers), default=0)
    busy = contended(rows, cores)
    if not busy:
        return ""
    return (f"<p class='bad'>{len(busy)} cell(s) were timed while the load average exceeded the {cores} cores "
            "(see the load column): other processes competed for the CPU and those latencies are inflated.</p>")


def _results_html(rows: list[dict[str, Any]]) -> str:
    head = ["model", "runtime", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "std ms", "img/s", "runs",
            "GMACs", "peak RSS MB (+engine)", "parity", "top-1", "torch top-1", "load", "error"]
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        lat, acc = r.get("latency_ms") or {}, r.get("accuracy") or {}
        parity = (r.get("parity") or {}).get("passed")
        cells = [r["model"], r["runtime"], r["batch"], r["status"],
                 *(f"{lat[k]:.2f}" if k in lat else "-" for k in ("p50", "p90", "p99", "std")),
                 f"{r['throughput_ips']:.1f}" if r.get("throughput_ips") else "-", r.get("runs") or "-",
                 f"{r['macs'] / 1e9:.3f}", _memory(r.get("memory") or {}),
                 {True: "pass", False: "FAIL", None: "-"}.get(parity, "-"),
                 format_or_dash(100 * acc["top1"] if acc.get("top1") is not None else None, ".2f"),
                 format_or_dash(100 * acc["reference_top1"] if acc.get("reference_top1") is not None else None, ".2f"),
                 "/".join(format_or_dash(v, ".1f") for v in r.get("load_average") or []) or "-", r.get("error") or ""]
        cls = " class='bad'" if r["status"] != "ok" else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(lines) + "</table>"


def _memory(memory: dict[str, Any]) -> str:
    peak, growth = memory.get("rss_peak_mb"), memory.get("rss_growth_mb")
    return "-" if peak is None else f"{peak:.0f}" + (f" (+{growth:.0f})" if growth is not None else "")


def _kept(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"
