"""The commands that measure and read measurements: bench, report, compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bench_run import Defaults, bench_settings, run_and_print
from .resume import resumed_request

if TYPE_CHECKING:
    from deploy.bench import BenchRequest, BenchSettings
    from deploy.bench.detect import Detection
    from deploy.bench.device_profiles import DeviceProfile

EXIT_FAILED = 1


def cmd_bench(args: argparse.Namespace) -> int:
    from deploy.errors import DeployError

    for flag, given in (("--retry-failed", args.retry_failed), ("--retry", args.retry)):
        if given and not args.resume:
            raise DeployError(f"{flag} goes with --resume")
    if args.resume and not args.json:
        raise DeployError("--resume continues a results file: name it with --json")
    if args.cluster:
        from .cluster_commands import cluster_bench

        return cluster_bench(args)
    if args.fetch_artifacts:
        raise DeployError("--fetch-artifacts brings engines back from a cluster's nodes: it goes with --cluster")
    request = resumed_request(args) if args.resume else _new_request(args)
    return run_and_print(args, request, request.settings.device or "run")


def _new_request(args: argparse.Namespace) -> BenchRequest:
    from deploy.bench import BenchRequest
    from deploy.errors import DeployError

    profile, detection = _bench_profile(args)
    names = args.models or list(profile.models if profile else [])
    if not names:
        raise DeployError("bench needs MODEL names, or a --device profile that names its models")
    for flag, given in (("--weights", args.weights), ("--num-classes", args.num_classes),
                        ("--img-size", args.img_size), ("--model-factory", args.model_factory)):
        if given and len(names) != 1:
            raise DeployError(f"{flag} applies to one model; bench one model at a time with its checkpoint")
    if args.labels or args.name:
        raise DeployError("--labels and --name belong to export and predict; bench names a model by MODEL")
    settings = bench_settings(args, Defaults.of(profile))
    return BenchRequest(
        models=names, targets=args.target or (list(profile.targets) if profile else ["torch", "onnxruntime"]),
        batches=args.batch or (list(profile.batches) if profile else [1]), settings=settings,
        out=Path(args.out or "artifacts"), precision=args.precision,
        precisions=profile.precisions if profile and not args.target else None,
        device=_bench_device_record(profile, detection, settings))


def _bench_profile(args: argparse.Namespace) -> tuple[DeviceProfile | None, Detection]:
    from deploy.bench import detect, device_profiles
    from deploy.errors import DeployError

    detection = detect.detect()
    if not args.device:
        return None, detection
    if len(args.device) > 1:
        raise DeployError("a local run times this machine: give one --device (several go with --cluster ADDRESS)")
    return device_profiles.resolve_device(args.device[0], detection, [Path(p) for p in args.profiles or []]), detection


def _bench_device_record(profile: DeviceProfile | None, detection: Detection,
                         settings: BenchSettings) -> dict[str, Any]:
    from deploy.bench.detect import device_settings

    device = device_settings(profile, detection, settings.threads)
    if profile and "power" in profile.record:
        device["power_sampling"] = "tegrastats" if settings.power else "not sampled: tegrastats is not on PATH"
    return device


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
