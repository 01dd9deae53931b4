"""The commands that measure and read measurements: bench, report, compare."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .resume import resumed_request

if TYPE_CHECKING:
    from deploy.bench import BenchRequest, BenchSettings
    from deploy.bench.detect import Detection
    from deploy.bench.device_profiles import DeviceProfile

T = TypeVar("T")

EXIT_FAILED = 1


def cmd_bench(args: argparse.Namespace) -> int:
    from deploy.bench import ResultsFile, run_bench
    from deploy.bench.formats import contended, format_table, profile_lines, to_csv, to_markdown
    from deploy.bench.progress import LinePrinter, RichProgress
    from deploy.bench.run import Resume
    from deploy.errors import DeployError

    for flag, given in (("--retry-failed", args.retry_failed), ("--retry", args.retry)):
        if given and not args.resume:
            raise DeployError(f"{flag} goes with --resume")
    if args.resume and not args.json:
        raise DeployError("--resume continues a results file: name it with --json")
    request = resumed_request(args) if args.resume else _new_request(args)
    default_name = f"bench-{request.settings.device or 'run'}-{_stamp()}.json"
    json_path = Path(args.json) if args.json else request.out / default_name
    side = {Path(path): render for path, render in ((args.csv, to_csv), (args.md, to_markdown)) if path}
    _check_outputs([(json_path, "--json"), *((Path(p), f) for p, f in ((args.csv, "--csv"), (args.md, "--md")) if p)])
    resume = Resume(retry_failed=args.retry_failed, retry=tuple(args.retry or ())) if args.resume else None
    try:
        document = run_bench(request, ResultsFile(json_path, side), resume=resume,
                             progress=RichProgress() if args.progress else LinePrinter())
    except KeyboardInterrupt:
        print(f"finished cells are saved in {json_path}; continue with --resume --json {json_path}", file=sys.stderr)
        raise
    cores = document.environment.get("cpu_count")
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


def _new_request(args: argparse.Namespace) -> BenchRequest:
    from deploy.bench import BenchRequest
    from deploy.errors import DeployError

    profile, detection = _bench_profile(args)
    names = args.models or list(profile.models if profile else [])
    if not names:
        raise DeployError("bench needs MODEL names, or a --device profile that names its models")
    if args.weights and len(names) != 1:
        raise DeployError("--weights applies to one model; bench one model at a time with its checkpoint")
    settings = _bench_settings(args, profile)
    return BenchRequest(
        models=names, targets=args.target or (list(profile.targets) if profile else ["torch", "onnxruntime"]),
        batches=args.batch or (list(profile.batches) if profile else [1]), settings=settings,
        out=Path(args.out or "artifacts"), precision=args.precision,
        precisions=profile.precisions if profile and not args.target else None,
        device=_bench_device_record(profile, detection, settings))


def _bench_profile(args: argparse.Namespace) -> tuple[DeviceProfile | None, Detection]:
    from deploy.bench import detect, device_profiles

    detection = detect.detect()
    if not args.device:
        return None, detection
    return device_profiles.resolve_device(args.device, detection, [Path(p) for p in args.profiles or []]), detection


def _bench_settings(args: argparse.Namespace, profile: DeviceProfile | None) -> BenchSettings:
    from deploy.bench import BenchSettings
    from deploy.bench.power import PowerSampler
    from deploy.timing import TimingSettings

    timing = profile.timing if profile else TimingSettings(warmup_s=1.0, runs=50)

    def pick(given: T | None, default: T) -> T:
        return default if given is None else given

    return BenchSettings(
        warmup_s=pick(args.warmup, timing.warmup_s), runs=pick(args.runs, timing.runs),
        duration_s=pick(args.duration, timing.duration_s), min_runs=timing.min_runs,
        buffers=pick(args.buffers, timing.buffers), threads=pick(args.threads, profile.threads if profile else None),
        seed=pick(args.seed, 0), dataset=args.dataset, dataset_limit=args.limit,
        power=bool(profile and "power" in profile.record and PowerSampler.available()),
        passes=pick(args.passes, "default"), weights=args.weights, device=profile.name if profile else None,
        layer_profile=bool(args.profile),
    )


def _bench_device_record(profile: DeviceProfile | None, detection: Detection,
                         settings: BenchSettings) -> dict[str, Any]:
    from deploy.bench.detect import device_settings

    device = device_settings(profile, detection, settings.threads)
    if profile and "power" in profile.record:
        device["power_sampling"] = "tegrastats" if settings.power else "not sampled: tegrastats is not on PATH"
    return device


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def cmd_report(args: argparse.Namespace) -> int:
    from deploy.report.html import write_report

    page, fidelity = write_report([Path(p) for p in args.results], Path(args.out), baseline=args.baseline,
                                  metric=args.metric)
    print(fidelity)
    print(f"\nreport: {page}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from deploy.report.compare import Gate, compare_files, parse_threshold

    gate = Gate(parse_threshold(args.max_slowdown), args.metric, allow_missing=args.allow_missing)
    text, regressed = compare_files(Path(args.old), Path(args.new), gate)
    print(text)
    return EXIT_FAILED if regressed else 0
