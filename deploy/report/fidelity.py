"""MAC-to-latency fidelity: does a model's MAC saving over a baseline survive as latency saving on a runtime?

Per runtime, each model's latency ratio to the baseline (deit_s unless `--baseline`) next to its MAC
ratio: fidelity = latency ratio / MAC ratio (1.00: latency follows MACs; above 1: the model is slower
than its MACs promise); "saving kept" = (1 - latency ratio) / (1 - MAC ratio), the share of the MAC
saving that shows up as latency saving.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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
    top1_dataset: str | None = None  # what the top-1 is on: the run's dataset if measured, else the published one's


@dataclass(frozen=True)
class FidelityRow:
    model: str
    macs_g: float
    latency_ms: float
    mac_ratio: float
    latency_ratio: float
    fidelity: float
    saving_kept: float | None  # None where the MAC ratio is too close to 1 to share out


Series = tuple[str, int]  # (runtime label, batch)
FidelityTables = dict[Series, list[FidelityRow]]


def fidelity(points: list[Point], baseline: str) -> FidelityTables:
    """(runtime, batch) -> rows of model, MAC ratio, latency ratio, fidelity, saving kept; [] without baseline."""
    by_series: dict[Series, list[Point]] = defaultdict(list)
    for p in points:
        by_series[(p.runtime, p.batch)].append(p)
    tables: FidelityTables = {}
    for series, members in by_series.items():
        base = next((p for p in members if p.model == baseline), None)
        if base is None:
            tables[series] = []
            continue
        rows = []
        for p in sorted(members, key=lambda p: (p.macs, p.model)):
            mac_ratio, lat_ratio = p.macs / base.macs, p.latency / base.latency
            kept = (1 - lat_ratio) / (1 - mac_ratio) if abs(1 - mac_ratio) >= MIN_SAVING else None
            rows.append(FidelityRow(p.model, p.macs / 1e9, p.latency, mac_ratio, lat_ratio, lat_ratio / mac_ratio,
                                    kept))
        tables[series] = rows
    return tables


def fidelity_text(tables: FidelityTables, baseline: str, metric: str = "p50") -> str:
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
            lines.append(f"  {r.model:<18} {r.macs_g:7.3f} {r.latency_ms:9.2f} {r.mac_ratio:9.3f} "
                         f"{r.latency_ratio:9.3f} {r.fidelity:8.2f} {kept_text(r.saving_kept):>11}")
    return "\n".join(lines)


def kept_text(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"
