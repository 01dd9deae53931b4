"""The report's per-layer profiles: where each engine's time goes next to where its MACs are.

Per runtime (`<target> <precision>`), one figure: for each profiled model a bar of its latency shares by
area (attention, MLP, norms, embedding, pooling, residual, head; the time outside nodes in grey) beside a
bar of its MAC shares, and a table per model of each part's time share, MAC share and their ratio (above
1: the part takes more of the time than of the MACs). Rows without a profile are left out.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..diagnose.records import LayerProfile

AREAS = ("attention", "mlp", "norm", "embed", "pool", "residual", "head", "other")
OUTSIDE = "outside nodes"


@dataclass(frozen=True)
class ProfiledCell:
    runtime: str  # the report's runtime label
    model: str
    batch: int
    profile: LayerProfile


def area_shares(profile: LayerProfile) -> tuple[dict[str, float], dict[str, float]]:
    """(time share, MAC share) per area; the time shares gain `outside nodes`, so they add up to 1."""
    time: dict[str, float] = defaultdict(float)
    macs: dict[str, float] = defaultdict(float)
    for part in profile.parts:
        time[part.area or "other"] += part.time_share
        macs[part.area or "other"] += part.mac_share
    time[OUTSIDE] = max(0.0, 1.0 - sum(time.values()))
    return dict(time), dict(macs)


def plot_profiles(cells: list[ProfiledCell], out: Path) -> list[str]:
    """One PNG per runtime and batch; returns their file names."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    names = []
    for (runtime, batch), members in sorted(_by_runtime(cells).items()):
        colours = {area: plt.get_cmap("tab10")(i) for i, area in enumerate(AREAS)} | {OUTSIDE: (0.8, 0.8, 0.8, 1)}
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(members) + 2), 4.8))
        for i, cell in enumerate(members):
            time, macs = area_shares(cell.profile)
            for offset, shares in ((-0.2, time), (0.2, macs)):
                bottom = 0.0
                for area in (*AREAS, OUTSIDE):
                    value = 100 * shares.get(area, 0.0)
                    if value > 0:
                        ax.bar(i + offset, value, 0.38, bottom=bottom, color=colours[area], label=area)
                        bottom += value
        ax.set_xticks(range(len(members)), [f"{c.model}\ntime | MACs" for c in members], fontsize=8)
        ax.set_ylabel("share (%)")
        ax.set_title(f"{runtime}, batch {batch}: latency | MACs by area")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # one entry per area
        ax.legend(unique.values(), unique.keys(), fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        name = f"profile_{_slug(runtime)}_b{batch}.png"
        _save(fig, out / name)
        names.append(name)
    return names


def _by_runtime(cells: list[ProfiledCell]) -> dict[tuple[str, int], list[ProfiledCell]]:
    grouped: dict[tuple[str, int], list[ProfiledCell]] = defaultdict(list)
    for cell in cells:
        grouped[(cell.runtime, cell.batch)].append(cell)
    return grouped


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def profiles_html(cells: list[ProfiledCell]) -> str:
    """The report's profile section: a parts table per profiled cell (the stacked bars are with the plots)."""
    if not cells:
        return ""
    parts = ["<h2>Where the time goes (per-layer profiles)</h2><p>Each runtime's own profiler, in runs separate "
             "from the timed ones; node times attributed to the model's modules through the exporter's name scopes "
             "(the <code>profile_*.png</code> plots stack them, latency beside MACs). time/MAC above 1: the part "
             "takes more of the latency than of the MACs.</p>"]
    for cell in cells:
        parts.append(_cell_html(cell))
    return "\n".join(parts)


def _cell_html(cell: ProfiledCell) -> str:
    p = cell.profile
    title = (f"<h3>{html.escape(cell.model)} on {html.escape(cell.runtime)}, batch {cell.batch}</h3>"
             f"<p>{p.runs} profiled runs, {p.total_ms:.3f} ms per inference; nodes cover {100 * p.coverage:.0f} %"
             + (f"; timed p50 {p.timed_ms:.3f} ms" if p.timed_ms else "") + "</p>")
    head = "<tr><th>part</th><th>area</th><th>ms</th><th>time %</th><th>MAC %</th><th>time/MAC</th><th>nodes</th></tr>"
    outside = p.total_ms - p.node_ms
    rows = [[s.name, s.area or "", f"{s.time_ms:.3f}", f"{100 * s.time_share:.1f}", f"{100 * s.mac_share:.1f}",
             f"{s.time_share / s.mac_share:.2f}" if s.mac_share >= 0.005 else "-", str(s.nodes)] for s in p.parts]
    rows.append(["(outside nodes)", "", f"{outside:.3f}", f"{100 * outside / p.total_ms:.1f}" if p.total_ms else "-",
                 "", "", ""])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in p.notes)
    return title + f"<table>{head}{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


def profile_diff(title: str, old: LayerProfile, new: LayerProfile) -> list[str]:
    """Two profiles of one cell, part by part: time per inference then and now, and each part's share."""
    change = f"{100 * (new.total_ms / old.total_ms - 1):+.1f}%" if old.total_ms else "-"
    lines = [f"{title}: profiled {old.total_ms:.3f} -> {new.total_ms:.3f} ms ({change})",
             f"  {'part':<12} {'old ms':>8} {'new ms':>8} {'change':>8} {'old %':>6} {'new %':>6}"]
    before = {s.name: s for s in old.parts}
    after = {s.name: s for s in new.parts}
    for name in [*before, *(n for n in after if n not in before)]:
        was, now = before.get(name), after.get(name)
        old_ms, new_ms = (was.time_ms if was else 0.0), (now.time_ms if now else 0.0)
        delta = f"{100 * (new_ms / old_ms - 1):+.1f}%" if old_ms else "new"
        lines.append(f"  {name:<12} {old_ms:8.3f} {new_ms:8.3f} {delta:>8} "
                     f"{100 * (was.time_share if was else 0):5.1f}% {100 * (now.time_share if now else 0):5.1f}%")
    outside_old, outside_new = old.total_ms - old.node_ms, new.total_ms - new.node_ms
    lines.append(f"  {'(outside)':<12} {outside_old:8.3f} {outside_new:8.3f}")
    return lines
