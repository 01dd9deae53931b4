"""The device farm's cost: the same cells run locally (twice) and through a local Ray cluster, on this machine.

    python scripts/bench_cluster.py [--models hvt_ti_1 hvt_s_1 deit_s] [--targets onnxruntime torch]
                                    [--runs 50] [--warmup 1] [--device-nodes 1] [--out DIR]

The cluster is a head (no bench slot) and `--device-nodes` device nodes labelled `cpu`, all on 127.0.0.1;
with the default of one device node the cluster has 2 nodes and no two cells are timed at once, so its
latencies are comparable with the local ones (two device nodes on one machine share its cores: use that only
to see the interference). It prints, per cell, the p50 of both local runs and of the cluster run, the
local run-to-run difference (the noise) and whether the cluster's p50 lies within it; then the per-cell
dispatch overhead: the round trip the driver sees for a group less the time the node spent running it
(export, parity, timing), and the actors' start-up, paid once per run. Every figure is measured in this one
run; on a shared machine the noise is large: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray then keeps every address on 127.0.0.1
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.bench import BenchRequest, BenchSettings, LocalExecutor, ResultsFile, run_bench  # noqa: E402
from deploy.bench.device_profiles import load_profile  # noqa: E402
from deploy.bench.group import run_group  # noqa: E402
from deploy.bench.plan import DeviceMatrix  # noqa: E402
from deploy.bench.progress import Progress  # noqa: E402

LABEL_VALUE = "cpu"


def timed_group(group, context):
    """run_group, with the seconds the node spent on the group written beside its artifacts."""
    start = time.perf_counter()
    rows = run_group(group, context)
    (context.out / f".seconds-{group.model}-{group.target}").write_text(str(time.perf_counter() - start))
    return rows


class RoundTrips(Progress):
    """When the driver dispatched each group and when its rows came back."""

    def __init__(self) -> None:
        self.sent: dict[tuple, float] = {}
        self.back: dict[tuple, float] = {}

    def cell_started(self, key) -> None:
        self.sent[(key.model, key.target)] = time.perf_counter()

    def cell_finished(self, row) -> None:
        self.back.setdefault((row.model, row.target), time.perf_counter())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hvt_ti_1", "hvt_s_1", "deit_s"])
    parser.add_argument("--targets", nargs="+", default=["onnxruntime", "torch"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--device-nodes", type=int, default=1)
    parser.add_argument("--out", default=None, help="artifacts and results (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-cluster-"))
    settings = BenchSettings(runs=args.runs, warmup_s=args.warmup, device=LABEL_VALUE)
    matrix = DeviceMatrix(LABEL_VALUE, tuple(args.models), tuple(args.targets), (1,))

    local = []
    for n in (1, 2):
        request = BenchRequest(args.models, args.targets, [1], settings, out / f"local-{n}")
        start = time.perf_counter()
        document = run_bench(request, ResultsFile(out / f"local-{n}.json"), executor=LocalExecutor())
        local.append(({(r.model, r.target): r for r in document.results}, time.perf_counter() - start))

    import ray
    from ray.cluster_utils import Cluster

    from deploy.cluster.connect import LABEL, SLOT, connected
    from deploy.cluster.executor import RayExecutor

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                             "include_dashboard": False})
    try:
        for _ in range(args.device_nodes):
            cluster.add_node(num_cpus=os.cpu_count(), resources={SLOT: 1}, labels={LABEL: LABEL_VALUE},
                             node_ip_address="127.0.0.1")  # its actor holds them all: threads as in a local run
        trips = RoundTrips()
        request = BenchRequest([], [], [], settings, out / "cluster", devices=(matrix,))
        with connected(cluster.address) as connection:
            executor = RayExecutor(connection, {LABEL_VALUE: load_profile(LABEL_VALUE)}, run_group=timed_group)
            start = time.perf_counter()
            document = run_bench(request, ResultsFile(out / "cluster.json"), progress=trips, executor=executor)
            cluster_wall = time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()
    remote = {(r.model, r.target): r for r in document.results}
    node_seconds = {}
    for path in (out / "cluster").glob("*/.seconds-*"):
        model, target = path.name.removeprefix(".seconds-").rsplit("-", 1)
        node_seconds[(model, target)] = float(path.read_text())
    report(local, remote, trips, node_seconds, cluster_wall, args.device_nodes)
    print(f"\nresults: {out}/local-1.json, local-2.json, cluster.json")
    return 0


def report(local, remote, trips, node_seconds, cluster_wall, device_nodes) -> None:
    print(f"{'cell':<28} {'local 1':>9} {'local 2':>9} {'cluster':>9} {'noise':>7} {'cluster-local':>14}  agree")
    agree = 0
    for key, row in remote.items():
        a, b = (run[0][key] for run in local)
        if not (row.latency_ms and a.latency_ms and b.latency_ms):
            print(f"{key[0] + ' ' + key[1]:<28} not ok: {row.error or a.error or b.error}")
            continue
        p1, p2, pc = a.latency_ms.p50, b.latency_ms.p50, row.latency_ms.p50
        mean = (p1 + p2) / 2
        noise = abs(p1 - p2) / mean
        diff = (pc - mean) / mean
        inside = min(p1, p2) * (1 - noise) <= pc <= max(p1, p2) * (1 + noise)
        agree += inside
        print(f"{key[0] + ' ' + key[1]:<28} {p1:>8.3f}  {p2:>8.3f}  {pc:>8.3f}  {100 * noise:>5.1f}%  "
              f"{100 * diff:>+12.1f}%  {'yes' if inside else 'NO'}")
    print(f"{agree} of {len(remote)} cluster p50s lie within the local runs' spread widened by their difference")
    timed = [k for k in remote if k in node_seconds and k in trips.back]
    overheads = [trips.back[k] - trips.sent[k] - node_seconds[k] for k in timed]
    if overheads:
        print(f"per-cell dispatch overhead (driver round trip - node's own time): mean "
              f"{statistics.mean(overheads):.3f} s, max {max(overheads):.3f} s over {len(overheads)} cells")
    busy = sum(node_seconds.values())
    print(f"wall: local {local[0][1]:.1f} s and {local[1][1]:.1f} s; cluster {cluster_wall:.1f} s "
          f"({device_nodes} device node(s)), of which the nodes ran groups for {busy:.1f} s; the rest is the actors' "
          "start-up (once per run) and dispatch")


if __name__ == "__main__":
    sys.exit(main())
