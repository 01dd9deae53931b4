"""The CPU's fp32 SGEMM ceiling through ONNX Runtime, and each benchmarked model's fraction of it.

    python scripts/sgemm_ceiling.py --threads 2 RESULTS.json [RESULTS.json ...]
    python scripts/sgemm_ceiling.py --threads 2 --bench hvt_s_0 hvt_s_1 hvt_s_4 deit_s cvt_13 vit_resnas_tiny \
        --target onnxruntime --target openvino --json sgemm-bench.json

The ceiling is one MatMul of an N x N fp32 input by an N x N constant (N = 2048 by default: 2 N^3 = 17.2
GFLOP per run; a constant, like a layer's weight, so ORT prepacks it as it does the models' weights) in an
ONNX Runtime session with `--threads` intra-op threads, timed as `bench` times a cell (deploy/timing.py:
warm-up by time, then `--runs` timed runs), at the statistic `--metric` names (p50 unless told). A
model's achieved rate is 2 x MACs / latency at the same statistic, and its fraction of the ceiling is that
over the ceiling: the issue's table. With `--bench`, the models are benchmarked in the same run (same
threads), with the ceiling measured before and after them; the higher of the two is the ceiling used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.bench.results import ResultRow, load_results  # noqa: E402
from deploy.timing import LatencyStats, TimingSettings, time_runner  # noqa: E402


def sgemm_gflops(size: int, threads: int, runs: int, metric: str) -> tuple[float, LatencyStats]:
    """(GFLOP/s at `metric`, latency statistics) of an N x N x N fp32 MatMul through ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from runtimes.ort_backend import OrtRunner

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, [size, size])],
                              [numpy_helper.from_array(weight, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory(prefix="sgemm-") as work:
        path = Path(work) / "sgemm.onnx"
        onnx.save_model(model, str(path))
        with OrtRunner(path, threads=threads) as runner:
            samples = time_runner(runner, "A", (size,), size, TimingSettings(warmup_s=1.0, runs=runs, buffers=2))
    stats = LatencyStats.of(samples)
    return 2 * size**3 / (stats.get(metric) * 1e-3) / 1e9, stats


def model_rates(rows: list[ResultRow], metric: str) -> dict[str, dict[str, tuple[float, float]]]:
    """model -> "target precision" -> (latency ms, GFLOP/s) for every ok fp32 cell at batch 1."""
    rates: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for row in rows:
        if row.status != "ok" or row.latency_ms is None or not row.macs or row.precision != "fp32" or row.batch != 1:
            continue
        latency = row.latency_ms.get(metric)
        rates[row.model][f"{row.target} {row.precision}"] = (latency, 2 * row.macs / (latency * 1e-3) / 1e9)
    return rates


def table(rows: list[ResultRow], macs: dict[str, int], ceiling: float, metric: str) -> str:
    rates = model_rates(rows, metric)
    runtimes = sorted({runtime for per_model in rates.values() for runtime in per_model})
    head = f"{'model':<18} {'GMACs':>6}" + "".join(f"  {r + ' ' + metric + ' ms':>24} {'GFLOP/s':>7} {'ceil':>5}"
                                                  for r in runtimes) + "  best fp32 engine"
    lines = [head, "-" * len(head)]
    for model in sorted(rates, key=lambda m: -macs[m]):
        cells = ""
        for runtime in runtimes:
            if runtime in rates[model]:
                latency, rate = rates[model][runtime]
                cells += f"  {latency:24.2f} {rate:7.0f} {100 * rate / ceiling:4.0f}%"
            else:
                cells += f"  {'-':>24} {'-':>7} {'-':>5}"
        best = max(rates[model].items(), key=lambda kv: kv[1][1])
        lines.append(f"{model:<18} {macs[model] / 1e9:6.2f}{cells}  {best[0]} {100 * best[1][1] / ceiling:.0f}%")
    return "\n".join(lines)


def _bench(args: argparse.Namespace) -> Path:
    from deploy.cli import main as deploy_main

    json_path = Path(args.json or "sgemm-bench.json")
    argv = ["bench", *args.bench, "--threads", str(args.threads), "--json", str(json_path), "--batch", "1",
            "--runs", str(args.bench_runs), "--no-progress", *(f"--target={t}" for t in args.target or ())]
    argv += ["--out", args.out] if args.out else []
    argv += ["--profile"] if args.profile else []
    code = deploy_main(argv)
    if code not in (0, 1):
        raise SystemExit(code)
    return json_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", metavar="RESULTS.json", help="results files to rate")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads (use the bench's --threads)")
    parser.add_argument("--size", type=int, default=2048, help="N of the N x N x N MatMul (default 2048)")
    parser.add_argument("--runs", type=int, default=20, help="timed SGEMM runs (default 20)")
    parser.add_argument("--metric", default="p50", choices=["p50", "min", "mean"], help="statistic (default p50)")
    parser.add_argument("--bench", nargs="+", metavar="MODEL", help="benchmark these models in this run first")
    parser.add_argument("--target", action="append", help="with --bench: runtimes (repeatable)")
    parser.add_argument("--bench-runs", type=int, default=100, help="with --bench: timed runs per cell (default 100)")
    parser.add_argument("--json", help="with --bench: the results file it writes (default sgemm-bench.json)")
    parser.add_argument("--out", help="with --bench: the artifact folder")
    parser.add_argument("--profile", action="store_true", help="with --bench: per-layer profiles too")
    args = parser.parse_args(argv)
    if not args.results and not args.bench:
        parser.error("give RESULTS.json files, or --bench MODEL ... to benchmark them here")
    before, stats = sgemm_gflops(args.size, args.threads, args.runs, args.metric)
    print(f"SGEMM {args.size}^3 fp32 through ONNX Runtime, {args.threads} thread(s): {stats.get(args.metric):.2f} ms "
          f"{args.metric} = {before:.0f} GFLOP/s (min {stats.min:.2f} ms, max {stats.max:.2f} ms)")
    ceiling, paths = before, [Path(p) for p in args.results]
    if args.bench:
        paths.append(_bench(args))
        after, stats = sgemm_gflops(args.size, args.threads, args.runs, args.metric)
        print(f"SGEMM again after the bench: {after:.0f} GFLOP/s; ceiling = the higher, {max(before, after):.0f}")
        ceiling = max(before, after)
    rows = [row for path in paths for row in load_results(path).results]
    macs = {row.model: row.macs or 0 for row in rows}
    print(f"\nachieved GFLOP/s = 2 x MACs / {args.metric} latency; ceil = its share of {ceiling:.0f} GFLOP/s "
          "(fp32, batch 1)")
    print(table(rows, macs, ceiling, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
