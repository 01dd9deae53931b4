"""The report's plots (matplotlib, Agg backend), one set per batch size.

- latency per model per runtime (bars: p50, or `--metric`; whiskers up to p90);
- latency against MACs, with each runtime's ideal line through the baseline (latency proportional to
  MACs): points below the line beat the MAC count, points above lose part of the MAC saving;
- accuracy against latency: the engine's measured top-1 where the run had a dataset, else the
  published ImageNet top-1 (hollow markers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DeployError
from .fidelity import Point


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
    _label(ax, [(p.model, p.latency, p.top1) for p in _slowest_per_model(chosen) if p.top1 is not None])
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
