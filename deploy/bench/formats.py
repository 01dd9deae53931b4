"""The benchmark's text outputs from typed rows: the terminal table, CSV and a markdown table."""

from __future__ import annotations

import csv
import io
from typing import Any

from .results import ResultRow


def format_or_dash(value: float | None, spec: str) -> str:
    """A table cell: `value` formatted with `spec`, or "-" where nothing was measured."""
    return "-" if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return format_or_dash(100 * value if value is not None else None, ".2f")


def contended(rows: list[ResultRow], cores: int | None) -> list[ResultRow]:
    """Cells timed while the 1-minute load average exceeded the core count.

    The benchmark alone keeps at most `cores` threads busy, so a higher load means other processes shared
    the CPU. (The load average lags by about a minute: a hint, not a proof.)
    """
    def peak(row: ResultRow) -> float:
        return max((v for v in row.load_average or [] if v is not None), default=0.0)

    return [r for r in rows if cores and peak(r) > cores]


def format_table(results: list[ResultRow], cores: int | None = None) -> str:
    """The terminal table; a `!` after the status marks a cell timed under contention (see `contended`)."""
    busy = {id(r) for r in contended(results, cores)}
    with_acc = any(r.accuracy for r in results)
    header = ["model", "target", "prec", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "mean ms",
              "img/s", "runs", "GMACs", "max|err|/scale", "cosine", "top1"]
    header += ["acc@1", "torch@1", "agree"] if with_acc else []
    rows = [header]
    for r in results:
        lat, parity = r.latency_ms, r.parity
        row = [
            r.model, r.target, r.precision + (f">{r.auto.precision}" if r.auto else ""), str(r.batch),
            r.status + ("!" if id(r) in busy else ""),
            *(format_or_dash(lat.get(k) if lat else None, ".2f") for k in ("p50", "p90", "p99", "mean")),
            f"{r.throughput_ips:.1f}" if r.throughput_ips else "-", str(r.runs or "-"),
            format_or_dash(r.macs / 1e9 if r.macs is not None else None, ".2f"),
            format_or_dash(parity.max_abs_rel if parity else None, ".1e"),
            format_or_dash(parity.cosine if parity else None, ".6f"),
            format_or_dash(parity.top1_agreement if parity else None, ".2f"),
        ]
        if with_acc:
            acc = r.accuracy
            row += [_percent(getattr(acc, k) if acc else None) for k in ("top1", "reference_top1", "agreement")]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {r.model}/{r.target}/{r.precision}/b{r.batch}: {r.error}" for r in results if r.status != "ok"]
    return "\n".join(lines + (["", "not ok:"] + failures if failures else []))


CSV_COLUMNS = ("model", "family", "target", "precision", "batch", "status", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
               "mean_ms", "std_ms", "min_ms", "max_ms", "throughput_ips", "runs", "params", "macs",
               "rss_peak_mb", "rss_growth_mb", "gpu_used_mb", "parity_passed", "max_abs_rel", "cosine", "top1", "top5",
               "reference_top1", "reference_top5", "agreement", "mean_power_w", "energy_mj_per_image", "error")


def flat_row(r: ResultRow) -> dict[str, Any]:
    """One row as flat columns (CSV_COLUMNS): nested records spread out, absent values None."""
    lat, parity, acc, mem, power = r.latency_ms, r.parity, r.accuracy, r.memory, r.power
    flat: dict[str, Any] = {k: getattr(r, k) for k in ("model", "family", "target", "precision", "batch", "status",
                                                       "throughput_ips", "runs", "params", "macs", "error")}
    flat.update({f"{k}_ms": lat.get(k) if lat else None for k in ("p50", "p90", "p95", "p99", "mean", "std", "min",
                                                                   "max")})
    flat.update(rss_peak_mb=mem.rss_peak_mb if mem else None, rss_growth_mb=mem.rss_growth_mb if mem else None,
                gpu_used_mb=mem.gpu_used_mb if mem else None, parity_passed=parity.passed if parity else None,
                max_abs_rel=parity.max_abs_rel if parity else None, cosine=parity.cosine if parity else None,
                mean_power_w=power.mean_w if power else None,
                energy_mj_per_image=power.energy_mj_per_image if power else None)
    flat.update({k: getattr(acc, k) if acc else None
                 for k in ("top1", "top5", "reference_top1", "reference_top5", "agreement")})
    return flat


def to_csv(results: list[ResultRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: "" if v is None else v for k, v in flat_row(r).items()})
    return buffer.getvalue()


def to_markdown(results: list[ResultRow]) -> str:
    header = ["model", "target", "precision", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "img/s", "runs",
              "GMACs", "peak RSS MB", "engine MB", "top-1", "torch top-1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        f = flat_row(r)
        cells = [f["model"], f["target"], f["precision"], str(f["batch"]), f["status"],
                 *(format_or_dash(f[f"{k}_ms"], ".2f") for k in ("p50", "p90", "p99")),
                 format_or_dash(f["throughput_ips"], ".1f"), str(f["runs"] or "-"),
                 format_or_dash(f["macs"] / 1e9 if f["macs"] is not None else None, ".2f"),
                 format_or_dash(f["rss_peak_mb"], ".0f"), format_or_dash(f["rss_growth_mb"], ".0f"),
                 _percent(f["top1"]), _percent(f["reference_top1"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def auto_lines(results: list[ResultRow]) -> list[str]:
    """One line per `--precision auto` engine: what it published and why, and its candidates' latencies."""
    lines, seen = [], set()
    for r in results:
        if r.auto is None or (r.model, r.target, r.device) in seen:
            continue
        seen.add((r.model, r.target, r.device))
        timed = ", ".join(f"{c.label} {c.latency_ms.score:.2f}" + ("" if c.status in ("chosen", "passed") else " (x)")
                          for c in sorted(r.auto.candidates, key=lambda c: c.latency_ms.score if c.latency_ms
                                          else float("inf")) if c.latency_ms)
        lines.append(f"  {r.model} {r.target} auto: published {r.auto.winner} ({r.auto.reason}); candidates ms "
                     f"(x: misses the goal): {timed}")
    if lines:
        lines.insert(0, "\nprecision auto (each artifact's manifest holds the whole table):")
    return lines


def profile_lines(results: list[ResultRow], parts: int = 4) -> list[str]:
    """One line per profiled cell: its largest parts' latency share next to their MAC share."""
    lines = []
    for r in results:
        cell = f"  {r.model} {r.target} {r.precision} b{r.batch}"
        if r.layer_profile_error:
            lines.append(f"{cell}: no profile ({r.layer_profile_error})")
        elif r.layer_profile:
            p = r.layer_profile
            largest = sorted(p.parts, key=lambda s: -s.time_share)[:parts]
            shares = ", ".join(f"{s.name} {100 * s.time_share:.0f}% | {100 * s.mac_share:.0f}%" for s in largest)
            lines.append(f"{cell}: {shares}; nodes cover {100 * p.coverage:.0f}% of {p.total_ms:.2f} ms")
    if lines:
        lines.insert(0, "per-layer profiles (latency share | MAC share of the largest parts; `python -m deploy report` "
                        "draws them, each row's layer_profile.file holds the full profile):")
    return lines
