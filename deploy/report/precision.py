"""The report's `--precision auto` section: accuracy (or agreement) against latency per runtime, the chosen point
marked, and each auto cell's candidates as a table.

One figure per runtime (target, and device for a cluster run), one panel per model: every timed candidate at its
latency (the search's score, ms) and its accuracy on the goal's images (agreement with PyTorch fp32, or top-1 for a
`--max-drop` goal; the seeded cosine where no labelled images were given), filled where it met the goal and hollow
where it missed it, the Pareto front as a line, the goal as a dashed line, and the published candidate as a star.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from ..export.precision_auto.record import PrecisionAutoRecord, quality
from .plots import _pyplot, _save, place_labels


@dataclass(frozen=True)
class AutoCell:
    runtime: str  # the target (and device) the candidates ran on
    model: str
    record: PrecisionAutoRecord


def auto_cells(rows: list[tuple[str, str, str | None, PrecisionAutoRecord | None]]) -> list[AutoCell]:
    """One cell per (runtime, model) from (target, model, device, auto record) rows, in order, without repeats."""
    cells: dict[tuple[str, str], AutoCell] = {}
    for target, model, device, record in rows:
        runtime = f"{device}: {target}" if device else target
        if record is not None and (runtime, model) not in cells:
            cells[(runtime, model)] = AutoCell(runtime, model, record)
    return list(cells.values())


def _axis(record: PrecisionAutoRecord) -> str:
    if not record.accuracy_measured:
        return "cosine with PyTorch fp32 (seeded inputs)"
    return "top-1 (%)" if record.by_drop else "top-1 agreement with PyTorch fp32 (%)"


def _scale(record: PrecisionAutoRecord) -> float:
    return 100.0 if record.accuracy_measured else 1.0


def plot_auto(cells: list[AutoCell], folder: Path) -> list[str]:
    """One PNG per runtime; their file names."""
    names = []
    for index, runtime in enumerate(dict.fromkeys(cell.runtime for cell in cells)):
        name = f"precision_auto_{index}.png"
        _save(auto_figure([cell for cell in cells if cell.runtime == runtime], runtime), folder / name, layout=False)
        names.append(name)
    return names


def auto_figure(cells: list[AutoCell], runtime: str):  # noqa: ANN201 - a matplotlib Figure
    """One runtime's figure, a panel per model, laid out, with every candidate's name placed."""
    columns = min(len(cells), 2)
    rows = -(-len(cells) // columns)
    fig, axes = _pyplot().subplots(rows, columns, figsize=(6.5 * columns, 4.8 * rows), squeeze=False)
    names_per_panel = [(ax, _panel(ax, cell)) for ax, cell in zip(axes.flat, cells, strict=False)]
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.suptitle(f"precision auto on {runtime}: accuracy against latency")
    # Candidates cluster (three int8 calibrations within a few percent): names go where they collide with none.
    for ax, items in names_per_panel:
        place_labels(ax, items, [(x, y) for _, x, y in items])
    return fig


def _panel(ax, cell: AutoCell) -> list[tuple[str, float, float]]:  # noqa: ANN001 - a matplotlib Axes
    """Draws the panel; returns each candidate's name and point, to be placed once the figure is laid out."""
    record, scale = cell.record, _scale(cell.record)
    timed = [(c, c.latency_ms.score, scale * value) for c in record.candidates
             if c.latency_ms is not None and (value := quality(c, record.by_drop)) is not None]
    for candidate, ms, value in timed:
        met = candidate.status in ("chosen", "passed")
        ax.scatter([ms], [value], s=40, marker="o", facecolors="tab:blue" if met else "none",
                   edgecolors="tab:blue" if met else "tab:red", zorder=3)
    front = sorted((ms, value) for candidate, ms, value in timed if candidate.pareto)
    if len(front) > 1:
        ax.step([ms for ms, _ in front], [value for _, value in front], where="post", color="tab:gray", lw=1,
                zorder=2, label="Pareto front")
    chosen = [(ms, value) for candidate, ms, value in timed if candidate.status == "chosen"]
    if chosen:
        ax.scatter(*zip(*chosen, strict=True), s=260, marker="*", color="gold", edgecolors="black", zorder=4,
                   label=f"published: {record.winner}")
    goal = _goal_line(record, timed)
    if goal is not None:
        ax.axhline(goal, color="tab:red", ls="--", lw=1, label="goal")
    values = [value for _, _, value in timed] + ([goal] if goal is not None else [])
    if values:
        low, high = min(values), max(values)
        pad = max(0.05 * (high - low), 0.002 * scale)
        # Neither agreement nor cosine exceeds 1 (100 %): the axis stops just above it.
        ax.set_ylim(low - pad, min(high + pad, scale + pad / 4))
    ax.set_xlabel("latency (ms, best round's median)")
    ax.set_ylabel(_axis(record))
    ax.set_title(f"{cell.model}: {record.goal}", fontsize=8)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:  # a panel with no front, star or goal has nothing to explain
        ax.legend(fontsize="x-small", loc="lower right")
    return [(candidate.label, ms, value) for candidate, ms, value in timed]


def _goal_line(record: PrecisionAutoRecord, timed: list) -> float | None:
    if not record.accuracy_measured:
        return None
    if record.max_drop is not None:
        reference = next((c.accuracy.reference_top1 for c, _, _ in timed if c.accuracy is not None), None)
        return None if reference is None else 100 * (reference - record.max_drop)
    return 100 * (record.min_agreement or 0.99)


def auto_html(cells: list[AutoCell]) -> str:
    """Each auto cell's candidates: what was published, and every candidate's figures and verdict."""
    if not cells:
        return ""
    parts = ["<h2>--precision auto</h2><p>Every candidate each auto engine built, gated and timed on this device "
             "(interleaved rounds). <b>&gt;</b> published, <b>*</b> on the Pareto front; the figures above draw them."
             "</p>"]
    for cell in cells:
        record = cell.record
        parts.append(f"<h3>{html.escape(cell.model)} on {html.escape(cell.runtime)}</h3><p>published "
                     f"<b>{html.escape(record.winner)}</b> ({html.escape(record.precision)}): "
                     f"{html.escape(record.reason)}<br>goal: {html.escape(record.goal)}</p>")
        head = "<tr><th></th><th>candidate</th><th>recipe</th><th>float layers</th><th>" + html.escape(
            _axis(record)) + "</th><th>ms</th><th>status</th><th>why</th></tr>"
        body = []
        for c in sorted(record.candidates, key=lambda c: c.latency_ms.score if c.latency_ms else float("inf")):
            value = quality(c, record.by_drop)
            shown = "-" if value is None else f"{_scale(record) * value:.4g}"
            mark = (">" if c.status == "chosen" else "") + ("*" if c.pareto else "")
            cells_ = [mark, c.label, c.recipe, ", ".join(c.float_layers) or "-", shown,
                      f"{c.latency_ms.score:.3f}" if c.latency_ms else "-", c.status, c.reason]
            cls = " class='bad'" if c.status in ("failed", "error") else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells_) + "</tr>")
        parts.append(f"<table>{head}{''.join(body)}</table>")
    return "\n".join(parts)
