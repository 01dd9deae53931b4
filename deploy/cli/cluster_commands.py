"""The device farm's commands: `bench --cluster`, `doctor --cluster` and `worker` (Ray is imported only here)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench_run import Defaults, bench_settings, run_and_print


def cluster_bench(args: argparse.Namespace) -> int:
    """One bench across the cluster's devices: each --device profile's matrix on the nodes labelled with it."""
    from deploy.bench import BenchRequest
    from deploy.cluster.connect import connected
    from deploy.cluster.executor import RayExecutor
    from deploy.cluster.request import Overrides, cluster_profiles, device_matrices, shared_threads, shared_timing
    from deploy.errors import DeployError

    if args.weights and len(args.models) != 1:
        raise DeployError("--weights applies to one model; name that MODEL")
    with connected(args.cluster) as cluster:
        labels = sorted({n.device for n in cluster.nodes() if n.device})
        profiles = cluster_profiles(args.device or [], labels, [Path(p) for p in args.profiles or []])
        chosen = list(profiles.values())
        defaults = Defaults(shared_timing(chosen), None if args.threads else shared_threads(chosen),
                            power=any("power" in p.record for p in chosen), device=",".join(sorted(profiles)))
        settings = bench_settings(args, defaults)
        overrides = Overrides(tuple(args.models), tuple(args.target or ()), tuple(args.batch or ()), args.precision)
        request = BenchRequest(
            models=[], targets=[], batches=[], settings=settings, out=Path(args.out),
            devices=device_matrices(profiles, overrides),
            device={"profile": settings.device, "device": "cluster", "cluster": args.cluster,
                    "devices": {label: p.source for label, p in profiles.items()}})
        executor = RayExecutor(cluster, profiles, fetch_artifacts=args.fetch_artifacts)
        return run_and_print(args, request, "cluster", executor)


def cluster_doctor(args: argparse.Namespace) -> int:
    from deploy.cluster.doctor import answers_json, cluster_doctor, format_answers

    answers = cluster_doctor(args.cluster, [Path(p) for p in args.profiles or []], args.timeout)
    print(json.dumps(answers_json(answers), indent=2) if args.json else format_answers(answers))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Start this machine's Ray node with its device label and one bench slot (blocks until stopped)."""
    import os

    from deploy.bench.detect import detect
    from deploy.cluster.worker import join_command, ray_executable, relay

    command = join_command(args.address, detect(), args.device, [Path(p) for p in args.profiles or []],
                           args.node_ip_address)
    print(f"joining {args.address} as device {command.label}: {command.shell()}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(command.shell())
        return 0
    return relay(command.argv(ray_executable()), {**os.environ, **command.env}, everything=args.debug)
