"""The report's plots (matplotlib, Agg backend), one set per batch size.

- latency per model per runtime (bars: p50, or `--metric`; whiskers up to p90);
- latency against MACs, with each runtime's ideal line through the baseline (latency proportional to
  MACs): points below the line beat the MAC count, points above lose part of the MAC saving;
- accuracy against latency: the engine's measured top-1 where the run had a dataset, else the
  published top-1 (hollow markers); the legend names the dataset of each (ImageNet, or `digits` for the
  `*_digits` references).

Log axes label their decades and, over a span short enough to leave room, the 2s and 5s between them.
Model names sit beside their points at the first of a few offsets where they overlap no other name, no
point and the legend (which stands outside the axes), measured in the drawn figure.
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
    _save(latency_figure(points, batch, metric), path)


def plot_macs(points: list[Point], path: Path, batch: int, baseline: str, metric: str = "p50") -> None:
    _save(macs_figure(points, batch, baseline, metric), path, layout=False)


def plot_accuracy(points: list[Point], path: Path, batch: int, metric: str = "p50") -> None:
    _save(accuracy_figure(points, batch, metric), path, layout=False)


def latency_figure(points: list[Point], batch: int, metric: str = "p50"):
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
    return fig


def macs_figure(points: list[Point], batch: int, baseline: str, metric: str = "p50"):
    plt = _pyplot()
    chosen = [p for p in points if p.batch == batch]
    runtimes = sorted({p.runtime for p in chosen})
    colours = _colours(runtimes)
    fig, ax = plt.subplots(figsize=(9.5, 5))
    span = [min(p.macs for p in chosen) / 1e9 * 0.8, max(p.macs for p in chosen) / 1e9 * 1.25]
    proportional = False
    for runtime in runtimes:
        series = sorted((p for p in chosen if p.runtime == runtime), key=lambda p: p.macs)
        ax.plot([p.macs / 1e9 for p in series], [p.latency for p in series], "o", color=colours[runtime], label=runtime)
        base = next((p for p in series if p.model == baseline), None)
        if base:
            slope = base.latency / (base.macs / 1e9)
            ax.plot(span, [slope * x for x in span], "--", color=colours[runtime], alpha=0.6, linewidth=1)
            proportional = True
    _plain_log_axes(ax, x=True, y=True)
    ax.set_xlabel("GMACs (this implementation, batch 1)")
    ax.set_ylabel(f"latency {metric} (ms)")
    # The title names the dashed line only when one is drawn: a run without the baseline model has none.
    ax.set_title(f"Latency against MACs (batch {batch}); " + (f"dashed: latency ∝ MACs through {baseline}"
                 if proportional else f"no {baseline} cell, so no latency ∝ MACs line"))
    ax.grid(which="both", alpha=0.3)
    _legend_outside(ax)
    place_labels(ax, [(p.model, p.macs / 1e9, p.latency) for p in _slowest_per_model(chosen)],
           [(p.macs / 1e9, p.latency) for p in chosen])
    return fig


def accuracy_figure(points: list[Point], batch: int, metric: str = "p50"):
    plt = _pyplot()
    chosen = [p for p in points if p.batch == batch and p.top1 is not None]
    runtimes = sorted({p.runtime for p in chosen})
    colours = _colours(runtimes)
    fig, ax = plt.subplots(figsize=(9.5, 5))
    for runtime in runtimes:
        for measured in (True, False):
            for dataset in sorted({p.top1_dataset or "" for p in chosen}):
                series = [p for p in chosen if p.runtime == runtime and p.top1_measured == measured
                          and (p.top1_dataset or "") == dataset]
                if series:
                    source = f"{'measured' if measured else 'published'} top-1" + (f" on {dataset}" if dataset else "")
                    ax.plot([p.latency for p in series], [p.top1 for p in series], "o", color=colours[runtime],
                            markerfacecolor=colours[runtime] if measured else "none", label=f"{runtime}: {source}")
    _plain_log_axes(ax, x=True, y=False)
    ax.set_xlabel(f"latency {metric} (ms)")
    ax.set_ylabel("top-1 (%)")
    hollow = "; hollow: published top-1" if not all(p.top1_measured for p in chosen) else ""
    ax.set_title(f"Accuracy against latency (batch {batch}){hollow}")
    ax.grid(which="both", alpha=0.3)
    _legend_outside(ax)
    place_labels(ax, [(p.model, p.latency, p.top1) for p in _slowest_per_model(chosen) if p.top1 is not None],
           [(p.latency, p.top1) for p in chosen if p.top1 is not None])
    return fig


def _slowest_per_model(points: list[Point]) -> list[Point]:
    # One label per model, on its slowest point: labels on every runtime's point would pile up.
    return list({p.model: p for p in sorted(points, key=lambda p: p.latency)}.values())


# Where a model's name may sit, in points from its point: right, then left, each above then below, then further.
_OFFSETS = ((5, 3), (5, -10), (-5, 3), (-5, -10), (5, 12), (-5, 12), (5, -19), (-5, -19), (0, 21), (0, -28))
_MARKER_PX = 5.0  # half the side of the square each plotted point keeps free of names


def place_labels(ax, items: list[tuple[str, float, float]], points: list[tuple[float, float]]) -> None:
    """Each name beside its point at the first offset where its box overlaps no name placed before, no point and
    no legend, and stays inside the axes (every offset taken: the first one; a denser plot than the zoo's).

    The figure is laid out first: the boxes are measured where they will be drawn.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(px - _MARKER_PX, py - _MARKER_PX, 2 * _MARKER_PX, 2 * _MARKER_PX)
             for px, py in ax.transData.transform(points)]
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    for name, x, y in sorted(items, key=lambda item: (item[1], item[2])):
        for attempt, (dx, dy) in enumerate(_OFFSETS):
            text = ax.annotate(name, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points",
                               ha="left" if dx > 0 else "right" if dx < 0 else "center")
            box = text.get_window_extent(renderer)
            free = not any(box.overlaps(other) for other in taken)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if free and inside:
                taken.append(box)
                break
            text.remove()
            if attempt == len(_OFFSETS) - 1:
                taken.append(ax.annotate(name, (x, y), fontsize=7, xytext=_OFFSETS[0], textcoords="offset points")
                             .get_window_extent(renderer))


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, where it covers no point and no name."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _plain_log_formatter(minor: bool):
    """matplotlib's choice of which log ticks to label, written as plain numbers (0.005, 20), not powers of ten.

    Minor ticks: every one labelled over less than half a decade, a subset (the 2s and 5s, or fewer) over
    less than two decades, none beyond: labelling them all ran them together (`0.0040.0050.006...`).
    """
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    return Plain(labelOnlyBase=not minor, minor_thresholds=(2, 0.5))


def _plain_log_axes(ax, x: bool, y: bool) -> None:
    for on, axis, scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            scale("log")
            axis.set_major_formatter(_plain_log_formatter(minor=False))
            axis.set_minor_formatter(_plain_log_formatter(minor=True))


def _models_by_macs(points: list[Point]) -> list[str]:
    return [name for _, name in sorted({(p.macs, p.model) for p in points})]


def _save(fig, path: Path, layout: bool = True) -> None:
    if layout:  # a plot with placed names was laid out before they were placed: another layout would move them
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
