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

    python scripts/sgemm_ceiling.py --threads 2 --kernels artifacts/vit_resnas_tiny/onnxruntime-fp32

    python scripts/sgemm_ceiling.py --threads 2 --interleave 8 artifacts/hvt_s_0/onnxruntime-fp32 \
        artifacts/hvt_s_1/onnxruntime-fp32 artifacts/hvt_s_0/openvino-fp32 artifacts/hvt_s_1/openvino-fp32

With `--interleave ROUNDS`, the arguments are artifact folders, and the SGEMM and every engine are timed in
the same interleaved rounds: on a shared machine whose speed drifts between cells, this is the
measurement whose ratios (hvt_s_1 / hvt_s_0, a model's share of the ceiling) hold.

With `--kernels`, each ONNX Runtime engine's compute kernels are also timed alone at the shapes the model
gives them (`runtimes.ort_kernels`): the model's GFLOP/s inside the graph, the same kernels' GFLOP/s
alone, and again alone with their weights coming from memory (cold), and the rest of the graph's time by
op type. Kernels alone below the ceiling are the kernels' shortfall at those shapes; a model near its
kernels cold but below them hot is held by memory traffic at batch 1; the rest is the graph's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.bench.results import ResultRow, load_results  # noqa: E402
from deploy.timing import LatencyStats, TimingSettings, input_feeds, interleaved_rounds, time_runner  # noqa: E402
from runtimes.base import Runner  # noqa: E402
from runtimes.ort_kernels import KernelReport, isolated_kernels  # noqa: E402
from runtimes.ort_trace import TraceSettings  # noqa: E402


@contextlib.contextmanager
def sgemm_runner(size: int, threads: int) -> Iterator[Runner]:
    """An active ONNX Runtime runner of one N x N x N fp32 MatMul by a constant, fed as input "A"."""
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
            yield runner


def sgemm_gflops(size: int, threads: int, runs: int, metric: str) -> tuple[float, LatencyStats]:
    """(GFLOP/s at `metric`, latency statistics) of an N x N x N fp32 MatMul through ONNX Runtime."""
    with sgemm_runner(size, threads) as runner:
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


def kernel_table(artifact: Path, report: KernelReport, ceiling: float, top: int) -> str:
    """One engine's compute kernels in the model, alone and alone with cold weights, grouped by op and
    shape, against `ceiling`."""
    kernels = report.kernels
    macs, inside, alone = (sum(k.macs for k in kernels), sum(k.in_model_ms for k in kernels),
                           sum(k.isolated_ms for k in kernels))
    cold = sum(k.isolated_ms if k.cold_ms is None else k.cold_ms for k in kernels)
    rate = lambda m, ms: 2 * m / (ms * 1e-3) / 1e9 if ms else 0.0  # noqa: E731
    lines = [f"{artifact}: kernels {report.total_ms:.2f} ms per inference; compute kernels {inside:.2f} ms "
             f"({100 * inside / report.total_ms:.0f}%) for {macs / 1e9:.2f} GMACs = {rate(macs, inside):.0f} "
             f"GFLOP/s ({100 * rate(macs, inside) / ceiling:.0f}% of ceiling); the same kernels alone "
             f"{alone:.2f} ms = {rate(macs, alone):.0f} GFLOP/s ({100 * rate(macs, alone) / ceiling:.0f}%), and with "
             f"weights from memory (cold) {cold:.2f} ms = {rate(macs, cold):.0f} GFLOP/s "
             f"({100 * rate(macs, cold) / ceiling:.0f}%)",
             "  rest of the graph: " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in
                                                 sorted(report.other_ms.items(), key=lambda kv: -kv[1]) if ms >= 0.05)]
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for kernel in kernels:
        groups[(kernel.op_type, kernel.shape)].append(kernel)
    lines.append(f"  {'op':<12} {'input shapes':<30} {'n':>3} {'model ms':>9} {'alone ms':>9} {'GFLOP/s':>8} "
                 f"{'alone':>6} {'ceil':>5} {'weights MB':>10} {'cold ms':>8} {'cold':>5}")
    for (op, shape), members in sorted(groups.items(), key=lambda kv: -sum(k.in_model_ms for k in kv[1]))[:top]:
        m, t_in, t_alone = (sum(k.macs for k in members), sum(k.in_model_ms for k in members),
                            sum(k.isolated_ms for k in members))
        megabytes = sum(k.weight_bytes for k in members) / 1e6
        t_cold = sum(k.isolated_ms if k.cold_ms is None else k.cold_ms for k in members)
        lines.append(f"  {op:<12} {shape:<30} {len(members):>3} {t_in:9.2f} {t_alone:9.2f} {rate(m, t_in):8.0f} "
                     f"{rate(m, t_alone):6.0f} {100 * rate(m, t_alone) / ceiling:4.0f}% {megabytes:10.1f} "
                     f"{t_cold:8.2f} {rate(m, t_cold):5.0f}")
    return "\n".join(lines)


def interleaved(artifacts: list[Path], args: argparse.Namespace) -> str:
    """The SGEMM and every engine timed in the same interleaved rounds (`deploy.timing.interleaved_rounds`,
    order reversed every other round): drift on a shared machine falls on the ceiling and the models alike.
    Each engine's latency is p50 over all its runs; its ratio is to the first listed engine of its runtime."""
    from deploy.export import load_artifact

    settings = TimingSettings(warmup_s=0.5, runs=args.interleave_runs, buffers=2)
    with contextlib.ExitStack() as active:
        sgemm = active.enter_context(sgemm_runner(args.size, args.threads))
        opened = {str(a): load_artifact(a, threads=args.threads) for a in artifacts}
        runners = {label: active.enter_context(runner) for label, (runner, _) in opened.items()}
        feeds = {label: input_feeds(runner.input_specs[0].name, tuple(m.model.input_size), 1, settings)
                 for label, (runner, m) in opened.items()}
        timed = interleaved_rounds({"sgemm": _Fed(sgemm, input_feeds("A", (args.size,), args.size, settings)),
                                    **{label: _Fed(runners[label], feeds[label]) for label in runners}},
                                   [{}], settings, args.interleave)
    p50 = {label: LatencyStats.of(times).p50 for label, times in timed.samples.items()}
    ceiling = 2 * args.size**3 / (p50["sgemm"] * 1e-3) / 1e9
    lines = [f"interleaved: {args.interleave} rounds x {args.interleave_runs} runs each; SGEMM {args.size}^3 p50 "
             f"{p50['sgemm']:.2f} ms = {ceiling:.0f} GFLOP/s (the ceiling of these rows)",
             f"  {'model':<18} {'target':<12} {'p50 ms':>8} {'GFLOP/s':>8} {'ceil':>5}  "
             "ratio to the first of its runtime"]
    first: dict[str, float] = {}
    for label, (_, manifest) in opened.items():
        rate = 2 * manifest.model.macs_g * 1e9 / (p50[label] * 1e-3) / 1e9
        base = first.setdefault(manifest.target, p50[label])
        lines.append(f"  {manifest.model.name:<18} {manifest.target:<12} {p50[label]:8.2f} {rate:8.0f} "
                     f"{100 * rate / ceiling:4.0f}%  {p50[label] / base:.3f}")
    return "\n".join(lines)


class _Fed:
    """A runner that feeds itself: `interleaved_rounds` hands every label the same feeds, and the SGEMM and
    each model take inputs of their own."""

    def __init__(self, runner: Runner, feeds: list) -> None:
        self.runner, self.feeds, self.index = runner, feeds, 0

    def infer(self, _feed: object) -> object:
        self.index += 1
        return self.runner.infer(self.feeds[self.index % len(self.feeds)])


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
    parser.add_argument("results", nargs="*", metavar="RESULTS.json",
                        help="results files to rate (artifact folders with --interleave)")
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
    parser.add_argument("--kernels", action="append", metavar="ARTIFACT_DIR",
                        help="an onnxruntime artifact (or .onnx): time its kernels alone too (repeatable)")
    parser.add_argument("--interleave", type=int, metavar="ROUNDS",
                        help="the positional arguments are artifact folders: time them and the SGEMM in this many "
                             "interleaved rounds (the first folder of each runtime is its ratios' base)")
    parser.add_argument("--interleave-runs", type=int, default=20, help="with --interleave: runs per round (20)")
    parser.add_argument("--top", type=int, default=12, help="with --kernels: kernel shapes listed (default 12)")
    args = parser.parse_args(argv)
    if not args.results and not args.bench and not args.kernels:
        parser.error("give RESULTS.json files, --bench MODEL ... or --kernels ARTIFACT_DIR")
    if args.interleave:
        print(interleaved([Path(p) for p in args.results], args))
        return 0
    before, stats = sgemm_gflops(args.size, args.threads, args.runs, args.metric)
    print(f"SGEMM {args.size}^3 fp32 through ONNX Runtime, {args.threads} thread(s): {stats.get(args.metric):.2f} ms "
          f"{args.metric} = {before:.0f} GFLOP/s (min {stats.min:.2f} ms, max {stats.max:.2f} ms)")
    ceiling, paths = before, [Path(p) for p in args.results]
    if args.bench:
        paths.append(_bench(args))
    engines = [Path(a) / "model.onnx" if Path(a).is_dir() else Path(a) for a in args.kernels or ()]
    reports = [(engine, isolated_kernels(engine, TraceSettings(args.threads))) for engine in engines]
    if args.bench or reports:
        after, stats = sgemm_gflops(args.size, args.threads, args.runs, args.metric)
        print(f"SGEMM again after them: {after:.0f} GFLOP/s; ceiling = the higher, {max(before, after):.0f}")
        ceiling = max(before, after)
    for engine, report in reports:
        print(f"\n{kernel_table(engine, report, ceiling, args.top)}")
    if not paths:
        return 0
    rows = [row for path in paths for row in load_results(path).results]
    macs = {row.model: row.macs or 0 for row in rows}
    print(f"\nachieved GFLOP/s = 2 x MACs / {args.metric} latency; ceil = its share of {ceiling:.0f} GFLOP/s "
          "(fp32, batch 1)")
    print(table(rows, macs, ceiling, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
