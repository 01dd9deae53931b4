"""Plain export vs the target's default passes vs `--passes auto`, per model and runtime, as latency ratios.

    python scripts/bench_passes.py                       # hvt_s_1 deit_s cvt_13 on onnxruntime and openvino
    python scripts/bench_passes.py vit_resnas_tiny --target onnxruntime --threads 1 --json out.json

For each (model, target) it exports three artifacts through the normal export stage (parity gate
included): `--passes none`, `--passes default` and `--passes auto` (which measures the target's candidates
itself and records them). It then loads the three engines together and times them in interleaved rounds
(order reversed every other round) with `deploy.timing.interleaved_rounds`, so contention on a shared
machine falls on all three alike. Reported per variant: p50 over all runs, and "best round" = the lowest
per-round median (the statistic `auto` selects on). Ratios are against the plain export.

    python scripts/bench_passes.py cvt_13 --target onnxruntime --threads 2 --versus +attention-ort-mha

`--versus SPEC` (repeatable) adds a `--passes` spec to the variants timed in the same rounds, reported
against the default list: how a candidate default is measured before it becomes one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib  # noqa: E402

from deploy.export import ExportRequest, export, load_artifact  # noqa: E402
from deploy.export.autotune import AutotuneSettings  # noqa: E402
from deploy.export.onnx_cache import OnnxCache  # noqa: E402
from deploy.timing import LatencyStats, TimingSettings, input_feeds, interleaved_rounds  # noqa: E402

VARIANTS = ("none", "default", "auto")


def measure(model: str, target: str, args: argparse.Namespace, cache: OnnxCache, root: Path) -> dict:
    auto_settings = AutotuneSettings(rounds=args.auto_rounds, runs=args.auto_runs, warmup_s=0.3, batch=1,
                                     tie_margin=args.tie_margin)
    exported = {}
    variants = (*VARIANTS, *args.versus)
    for index, variant in enumerate(variants):
        started = time.perf_counter()
        result = export(ExportRequest(model, target, "fp32", out=root / str(index), passes=variant, batch=(1,),
                                      threads=args.threads, autotune=auto_settings), onnx_cache=cache)
        exported[variant] = result.manifest
        print(f"  {model} {target} {variant}: exported in {time.perf_counter() - started:.0f} s, parity "
              f"{result.manifest.parity.max_abs_rel:.1e} of scale", file=sys.stderr, flush=True)
    runners = {v: load_artifact(root / str(i) / model / f"{target}-fp32", threads=args.threads)[0]
               for i, v in enumerate(variants)}
    settings = TimingSettings(warmup_s=args.warmup, runs=args.runs, buffers=4)
    input_size = tuple(exported["none"].model.input_size)
    with contextlib.ExitStack() as active:
        for runner in runners.values():
            active.enter_context(runner)
        timed = interleaved_rounds(runners, input_feeds("input", input_size, 1, settings), settings, args.rounds)
    row = {"model": model, "target": target, "threads": args.threads, "versus": list(args.versus)}
    for variant in variants:
        stats = LatencyStats.of(timed.samples[variant])
        row[variant] = {"p50": stats.p50, "best_round": min(timed.medians[variant]), "mean": stats.mean,
                        "parity_max_abs_rel": exported[variant].parity.max_abs_rel,
                        "passes": [p.name for p in (exported[variant].onnx.passes if exported[variant].onnx else [])
                                   if p.changed]}
    auto = exported["auto"].onnx.auto
    row["auto_winner"] = auto.winner
    row["auto_reason"] = auto.reason
    row["auto_candidates"] = [
        {"label": c.label, "status": c.status, "score": c.latency_ms.score if c.latency_ms else None,
         "same_as": c.same_as} for c in auto.candidates]
    return row


def format_rows(rows: list[dict]) -> str:
    header = ["model", "target", "none p50", "default p50", "auto p50", "default/none", "auto/none",
              "best-round default/none", "best-round auto/none", "auto picked"]
    lines = [header]
    for r in rows:
        n, d, a = (r[v] for v in VARIANTS)
        lines.append([r["model"], r["target"], f"{n['p50']:.2f}", f"{d['p50']:.2f}", f"{a['p50']:.2f}",
                      f"{d['p50'] / n['p50']:.3f}", f"{a['p50'] / n['p50']:.3f}",
                      f"{d['best_round'] / n['best_round']:.3f}", f"{a['best_round'] / n['best_round']:.3f}",
                      r["auto_winner"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    details = ["", "auto's candidates (score = best per-round median, ms, during selection):"]
    for r in rows:
        cells = [f"{c['label']} {c['score']:.2f}" if c["score"] is not None else f"{c['label']} ({c['status']}"
                 + (f" = {c['same_as']})" if c["same_as"] else ")") for c in r["auto_candidates"]]
        details.append(f"  {r['model']} {r['target']}: " + "; ".join(cells))
        details.append(f"      winner {r['auto_winner']}: {r['auto_reason']}")
        for spec in r["versus"]:
            v, d = r[spec], r["default"]
            details.append(f"      {spec} against default: p50 {v['p50']:.2f} / {d['p50']:.2f} ms = "
                           f"{v['p50'] / d['p50']:.3f}, best round {v['best_round'] / d['best_round']:.3f}, "
                           f"parity {v['parity_max_abs_rel']:.1e}, passes that fired: {', '.join(v['passes'])}")
    return "\n".join(out + details)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["hvt_s_1", "deit_s", "cvt_13"])
    parser.add_argument("--target", action="append", help="repeatable (default: onnxruntime and openvino)")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's, all cores)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=15, help="runs per variant per round")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before each timed block")
    parser.add_argument("--auto-rounds", type=int, default=AutotuneSettings.rounds)
    parser.add_argument("--auto-runs", type=int, default=AutotuneSettings.runs)
    parser.add_argument("--tie-margin", type=float, default=0.02)
    parser.add_argument("--versus", action="append", default=[], metavar="SPEC",
                        help="a --passes spec timed with the others, against default (repeatable)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    targets = args.target or ["onnxruntime", "openvino"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {os.cpu_count()} CPUs, load average {load:.2f} at start; threads {args.threads or 'default'}; "
          f"{args.rounds} rounds x {args.runs} runs per variant, batch 1", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as tmp:
        root = Path(tmp)
        (root / "onnx").mkdir()
        cache = OnnxCache(root / "onnx")
        for model in args.models:
            for target in targets:
                rows.append(measure(model, target, args, cache, root))
                print(format_rows(rows[-1:]).splitlines()[2], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.2f} at the end\n")
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
