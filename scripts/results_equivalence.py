"""Do two results files agree on everything but timings and timestamps? (A refactor's regression check.)

    python scripts/results_equivalence.py BEFORE.json AFTER.json [--also-ignore KEY ...]

Cells are matched on (model, target, precision, batch), and a cluster run's on their device label too
(`--also-ignore node --also-ignore device` compares a cluster run's cells with a local run's). Ignored:
the file's created/updated/resumed stamps, and in each row what depends on the clock or the machine's
state: latency, throughput, timed seconds, load average, memory and power, and `--passes auto`'s own
timings (its candidates' latencies and the seconds it took). Everything else (status, errors, parity
figures, accuracy, passes and their counts, settings, environment) must be equal. Exit 0 when they are,
1 with the differences otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMESTAMPS = ("created", "updated", "resumed")
CLOCK_FIELDS = ("latency_ms", "throughput_ips", "timed_s", "load_average", "memory", "power")


def _cell(row: dict[str, Any], ignored: tuple[str, ...] = ()) -> tuple:
    """The cell's key; a cluster run's rows also carry their device label (unless it is ignored)."""
    device = () if "device" in ignored or "device" not in row else (row["device"],)
    return (row["model"], row["target"], row["precision"], row["batch"], *device)


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Every path at which two JSON values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                found.append(f"{where}.{key}: only in {'AFTER' if key not in before else 'BEFORE'}")
            else:
                found += differences(before[key], after[key], f"{where}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (b, a) in pairs for d in differences(b, a, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {before!r} != {after!r}"]


def comparable(document: dict[str, Any], ignored: tuple[str, ...]) -> dict[str, Any]:
    """The document without its timestamps and clock-dependent fields, rows keyed by cell."""
    rows = {}
    for row in document.get("results", []):
        kept = {k: v for k, v in row.items() if k not in CLOCK_FIELDS and k not in ignored}
        rows[repr(_cell(row, ignored))] = kept
    head = {k: v for k, v in document.items() if k not in (*TIMESTAMPS, "results") and k not in ignored}
    return {**head, "results": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--also-ignore", action="append", default=[], metavar="KEY",
                        help="a further top-level or row key to leave out")
    args = parser.parse_args(argv)
    ignored = tuple(args.also_ignore)
    before, after = (comparable(json.loads(Path(p).read_text()), ignored) for p in (args.before, args.after))
    found = differences(before, after)
    for line in found:
        print(line)
    cells = len(before["results"])
    print(f"{args.before} vs {args.after}: {cells} cell(s); "
          + (f"{len(found)} difference(s)" if found else "equal apart from timings and timestamps"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
