"""What every bench run shares, local or on a cluster: its settings from the profile(s) and the command line,
and running the matrix into the results files with the table printed at the end."""

from __future__ import annotations

import argparse
import os
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
    """Run the matrix into the results files, print the table and any contended cells; exit 1 if a cell failed."""
    from deploy.bench import ResultsFile, run_bench
    from deploy.bench.formats import contended, format_table, profile_lines, to_csv, to_markdown
    from deploy.bench.progress import LinePrinter, RichProgress
    from deploy.bench.run import Resume

    json_path = Path(args.json) if args.json else Path(request.out) / f"bench-{name}-{_stamp()}.json"
    side = {Path(path): render for path, render in ((args.csv, to_csv), (args.md, to_markdown)) if path}
    _check_outputs([(json_path, "--json"), *((Path(p), f) for p, f in ((args.csv, "--csv"), (args.md, "--md")) if p)])
    resume = Resume(retry_failed=args.retry_failed, retry=tuple(args.retry or ())) if args.resume else None
    try:
        document = run_bench(request, ResultsFile(json_path, side), resume=resume,
                             progress=RichProgress() if args.progress else LinePrinter(), executor=executor)
    except KeyboardInterrupt:
        print(f"finished cells are saved in {json_path}; continue with --resume --json {json_path}", file=sys.stderr)
        raise
    cores = document.environment.cpu_count
    print(format_table(document.results, cores))
    profiles = profile_lines(document.results)
    if profiles:
        print("\n" + "\n".join(profiles))
    busy = contended(document.results, cores)
    if busy:
        cells = " ".join(f"--retry {r.model}/{r.target}/{r.precision}/{r.batch}" for r in busy)
        print(f"\n{len(busy)} cell(s) marked ! ran while the load average exceeded the {cores} cores: other "
              f"processes competed, so their latencies are inflated. On a quiet machine, re-run them with:\n"
              f"  python -m deploy bench --resume --json {json_path} {cells}")
    print("\nresults: " + ", ".join(str(p) for p in (json_path, *side)))
    return EXIT_FAILED if any(r.status == "failed" for r in document.results) else 0


def _check_outputs(outputs: list[tuple[Path, str]]) -> None:
    from deploy.errors import DeployError
    from deploy.fileio import ensure_writable

    for path, flag in outputs:
        ensure_writable(path.resolve().parent, flag)
        if path.exists() and not os.access(path, os.W_OK):
            raise DeployError(f"{flag} {path} is not writable; pass another {flag} path")


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
    """The run's settings: the flags given, else the profile's; a bad value is one line naming its flag."""
    from pydantic import ValidationError

    from deploy.bench import BenchSettings
    from deploy.errors import DeployError, validation_problem

    from .resume import SETTING_FLAGS

    timing = defaults.timing

    def pick(given: T | None, default: T) -> T:
        return default if given is None else given

    try:
        return BenchSettings(
            warmup_s=pick(args.warmup, timing.warmup_s), min_warmup_runs=timing.min_warmup_runs,
            runs=pick(args.runs, timing.runs), duration_s=pick(args.duration, timing.duration_s),
            min_runs=timing.min_runs, buffers=pick(args.buffers, timing.buffers),
            threads=pick(args.threads, defaults.threads),
            seed=pick(args.seed, 0), dataset=args.dataset, dataset_limit=args.limit, power=defaults.power,
            passes=pick(args.passes, "default"), weights=args.weights, device=defaults.device,
            layer_profile=bool(args.profile), num_classes=args.num_classes, img_size=args.img_size,
            model_factory=args.model_factory, options=_options(args),
        )
    except ValidationError as exc:
        where, what = validation_problem(exc)
        flags = {field: f"--{flag}" for flag, field in SETTING_FLAGS.items()}
        raise DeployError(f"{flags.get(str(where[0]), where[0]) if where else 'a setting'} {what}") from None


def _options(args: argparse.Namespace) -> dict[str, dict[str, str]] | None:
    """`--option` per target of the run, checked against each adapter's typed options now, not per cell."""
    if not args.option:
        return None
    from runtimes import get_backend, target_names

    from .options import option_values

    targets = args.target or target_names()
    chosen = {t: values for t, values in option_values(args.option, targets).items() if values}
    for target, values in chosen.items():
        get_backend(target).parse_options(values)
    return chosen


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")
