"""What every bench run shares, local or on a cluster: its settings from the profile(s) and the command line,
and running the matrix into the results files with the table printed at the end."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from deploy.bench import BenchRequest, BenchSettings
    from deploy.bench.device_profiles import DeviceProfile
    from deploy.bench.run import Executor
    from deploy.timing import TimingSettings

T = TypeVar("T")

EXIT_FAILED = 1


def run_and_print(args: argparse.Namespace, request: BenchRequest, name: str, executor: Executor | None = None) -> int:
    """Run the matrix into the results files, print the table; exit 1 if a cell failed."""
    from deploy.bench import ResultsFile, run_bench
    from deploy.bench.formats import format_table, to_csv, to_markdown
    from deploy.bench.progress import LinePrinter, RichProgress
    from deploy.bench.run import Resume
    from deploy.fileio import ensure_writable

    json_path = Path(args.json) if args.json else Path(args.out) / f"bench-{name}-{_stamp()}.json"
    side = {Path(path): render for path, render in ((args.csv, to_csv), (args.md, to_markdown)) if path}
    outputs = [json_path, *side]
    for path in outputs:
        ensure_writable(path.resolve().parent)
    try:
        document = run_bench(request, ResultsFile(json_path, side),
                             resume=Resume(retry_failed=args.retry_failed) if args.resume else None,
                             progress=RichProgress() if args.progress else LinePrinter(), executor=executor)
    except KeyboardInterrupt:
        print(f"finished cells are saved in {json_path}; continue with --resume --json {json_path}", file=sys.stderr)
        raise
    print(format_table(document.results))
    print("\nresults: " + ", ".join(str(p) for p in outputs))
    return EXIT_FAILED if any(r.status == "failed" for r in document.results) else 0


@dataclass(frozen=True)
class Defaults:
    """What the profile (or the profiles of a cluster run) sets where the command line does not."""

    timing: TimingSettings
    threads: int | None = None
    power: bool = False  # the profile records board power (sampled where tegrastats exists)
    device: str | None = None  # the profile's name, recorded in the settings

    @classmethod
    def of(cls, profile: DeviceProfile | None) -> Defaults:
        from deploy.bench.power import PowerSampler
        from deploy.timing import TimingSettings

        if profile is None:
            return cls(TimingSettings(warmup_s=1.0, runs=50))
        return cls(profile.timing, profile.threads, "power" in profile.record and PowerSampler.available(),
                   profile.name)


def bench_settings(args: argparse.Namespace, defaults: Defaults) -> BenchSettings:
    from deploy.bench import BenchSettings

    timing = defaults.timing

    def pick(given: T | None, default: T) -> T:
        return default if given is None else given

    return BenchSettings(
        warmup_s=pick(args.warmup, timing.warmup_s), min_warmup_runs=timing.min_warmup_runs,
        runs=pick(args.runs, timing.runs), duration_s=pick(args.duration, timing.duration_s),
        min_runs=timing.min_runs, buffers=pick(args.buffers, timing.buffers),
        threads=pick(args.threads, defaults.threads),
        seed=args.seed, dataset=args.dataset, dataset_limit=args.limit, power=defaults.power, passes=args.passes,
        weights=args.weights, device=defaults.device,
    )


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")
