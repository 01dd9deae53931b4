"""`python -m deploy compare OLD.json NEW.json --max-slowdown 5%`: a regression check between two runs.

Cells are matched on (model, target, precision, batch), and on the device label in a cluster run's
files (a local run against a cluster run of one device matches without it). A regression is a matched
cell whose latency (p50 unless `--metric`) grew by more than the threshold, that was ok and now failed,
or that OLD has and NEW lacks (unless `--allow-missing`): a gate must not pass because the cell it guards
stopped running. Cells that became unavailable or unverified (a runtime missing on the new machine), or
that only NEW has, are listed but do not fail the check. Two files that share no cell are an error
(exit 2), not a pass.
Where both files carry a per-layer profile of a cell (`bench --profile`), a profile diff follows: each
part's time then and now, so a change shows where it happened. It informs; it does not gate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bench.results import CellKey, ResultRow, ResultsDocument, load_results
from ..errors import DeployError
from .profiles import profile_diff


def parse_threshold(text: str) -> float:
    """'5%' -> 0.05; a bare number is a fraction when below 1 ('0.05'), else percent ('5')."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", str(text))
    if not match:
        raise DeployError(f"--max-slowdown {text!r}: give a percentage such as 5% or a fraction such as 0.05")
    value = float(match.group(1))
    return value / 100 if match.group(2) or value >= 1 else value


@dataclass(frozen=True)
class Comparison:
    """One cell on either side: its latency then and now, and the verdict."""

    key: CellKey
    old: float | None
    new: float | None
    change: float | None
    verdict: str
    regression: bool = False


@dataclass(frozen=True)
class Gate:
    """What counts as a regression: the slowdown threshold, the latency statistic, and missing cells."""

    threshold: float
    metric: str = "p50"
    allow_missing: bool = False


def compare_reports(old: ResultsDocument, new: ResultsDocument, gate: Gate) -> tuple[list[Comparison], bool]:
    """One entry per cell on either side, with its verdict; and whether any is a regression."""
    key = _key_for(old, new)
    old_rows = {key(r): r for r in old.results}
    new_rows = {key(r): r for r in new.results}
    entries = [_entry(key, old_rows.get(key), new_rows.get(key), gate)
               for key in [*old_rows, *(k for k in new_rows if k not in old_rows)]]
    return entries, any(e.regression for e in entries)


def _key_for(old: ResultsDocument, new: ResultsDocument) -> Callable[[ResultRow], CellKey]:
    """Cells match on their device label too, except a local run against a cluster run of one device."""
    old_labels, new_labels = ({r.device for r in doc.results} for doc in (old, new))
    one_device = {frozenset({None}), frozenset(old_labels | new_labels) - {None}}
    if len(old_labels | new_labels) == 2 and {frozenset(old_labels), frozenset(new_labels)} == one_device:
        return lambda row: row.key._replace(device=None)
    return lambda row: row.key


def _entry(key: CellKey, old: ResultRow | None, new: ResultRow | None, gate: Gate) -> Comparison:
    threshold, metric = gate.threshold, gate.metric
    before, after = _latency(old, metric), _latency(new, metric)
    if old is None:
        return Comparison(key, before, after, None, "only in NEW")
    if new is None:
        return Comparison(key, before, after, None, "only in OLD" + ("" if gate.allow_missing else ": MISSING"),
                          regression=not gate.allow_missing)
    if old.status == "ok" and new.status == "failed":
        return Comparison(key, before, after, None, f"now failed: {new.error or ''}"[:100], regression=True)
    if before is None or after is None:
        return Comparison(key, before, after, None, f"{old.status} -> {new.status}")
    change = after / before - 1
    verdict = "SLOWER" if change > threshold else "faster" if change < -threshold else "same"
    return Comparison(key, before, after, change, verdict, regression=verdict == "SLOWER")


def _latency(row: ResultRow | None, metric: str) -> float | None:
    if not row or row.status != "ok" or row.latency_ms is None:
        return None
    return row.latency_ms.get(metric)


def format_comparison(entries: list[Comparison], threshold: float, metric: str, notes: Sequence[str] = ()) -> str:
    lines = [f"{'model':<18} {'target':<12} {'prec':<5} {'batch':>5} {'old ' + metric:>10} "
             f"{'new ' + metric:>10} {'change':>8}  verdict"]
    for e in entries:
        model, target, precision, batch, device = e.key
        model = f"{model}@{device}" if device else model  # a cluster run's cells are per device
        old = f"{e.old:.2f}" if e.old is not None else "-"
        new = f"{e.new:.2f}" if e.new is not None else "-"
        change = f"{100 * e.change:+.1f}%" if e.change is not None else "-"
        lines.append(f"{model:<18} {target:<12} {precision:<5} {batch:>5} {old:>10} {new:>10} {change:>8}  "
                     f"{e.verdict}")
    regressions = sum(e.regression for e in entries)
    compared = sum(e.change is not None for e in entries)
    lines += [*(f"note: {n}" for n in notes), "",
              f"{compared} cell(s) compared on {metric} latency, threshold {100 * threshold:g}%: "
              + (f"{regressions} regression(s): FAIL" if regressions else "no regression: OK")]
    return "\n".join(lines)


def compare_files(old_path: Path, new_path: Path, gate: Gate) -> tuple[str, bool]:
    """The printed comparison and whether it found a regression; an error when the files share no cell."""
    old, new = load_results(old_path), load_results(new_path)
    key = _key_for(old, new)
    shared = {key(r) for r in old.results} & {key(r) for r in new.results}
    if not shared:
        raise DeployError(f"{old_path} ({len(old.results)} cell(s)) and {new_path} ({len(new.results)} cell(s)) "
                          "share no cell: nothing to compare, so no regression check was made")
    entries, regressed = compare_reports(old, new, gate)
    text = format_comparison(entries, gate.threshold, gate.metric, _environment_notes(old, new))
    return "\n".join([text, *_profile_diffs(old, new, key)]), regressed


def _profile_diffs(old: ResultsDocument, new: ResultsDocument, key: Callable[[ResultRow], CellKey]) -> list[str]:
    """A part-by-part diff for every cell both files profiled."""
    new_rows = {key(r): r for r in new.results}
    lines: list[str] = []
    for row in old.results:
        other = new_rows.get(key(row))
        if row.layer_profile and other is not None and other.layer_profile:
            model, target, precision, batch, device = key(row)
            model = f"{model}@{device}" if device else model
            lines += ["", *profile_diff(f"{model} {target} {precision} b{batch}", row.layer_profile,
                                        other.layer_profile)]
    return ["", "profile diff (per-layer profiles in both files):", *lines] if lines else []


def _environment_notes(old: ResultsDocument, new: ResultsDocument) -> list[str]:
    # Different hardware or runtime versions explain a change as well as the code does: say so.
    notes = []
    old_env, new_env = old.environment, new.environment
    for key in ("processor", "cpu_count", "threads", "torch"):
        if getattr(old_env, key) != getattr(new_env, key):
            notes.append(f"{key} differs: {getattr(old_env, key)!r} (OLD) vs {getattr(new_env, key)!r} (NEW)")
    for name in sorted(set(old_env.runtimes) | set(new_env.runtimes)):
        was, now = old_env.runtimes.get(name), new_env.runtimes.get(name)
        if was != now:
            notes.append(f"{name} differs: {was!r} (OLD) vs {now!r} (NEW)")
    return notes
