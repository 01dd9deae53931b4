"""`python -m deploy list | export | bench | doctor | passes | inspect`.

Every user-fixable problem ends as one `error:` line and a non-zero exit; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_FAILED = 1


def _precision_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                       help="engine precision (default: the target's default)")
    for name in ("fp32", "fp16", "bf16", "int8"):
        group.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                           help=f"same as --precision {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="the model zoo with params, MACs and published top-1")
    p.add_argument("--family", help="only this family (hvt, deit, cvt, resnas)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("export", help="model -> ONNX -> passes -> engine -> parity -> artifact folder")
    p.add_argument("model")
    p.add_argument("--target", default="onnxruntime", help="onnxruntime (default), openvino, tensorrt, coreml, torch")
    _precision_args(p)
    p.add_argument("--weights", help="local official checkpoint (.pth); without it, random init")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="use_ema", action="store_const", const=True, help="load 'model_ema' weights")
    ema.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, help="load 'model' weights")
    p.add_argument("--out", default="artifacts", help="artifact root (default: artifacts/)")
    p.add_argument("--batch", type=int, action="append", help="batch sizes to serve and check (default 1 and 4)")
    p.add_argument("--passes", default="default", help="default | none | a,b | +a,-b")
    p.add_argument("--opset", type=int, help="override the target's ONNX opset")
    p.add_argument("--threads", type=int, help="runtime threads")
    p.add_argument("--device", help="runtime device (e.g. OpenVINO CPU/GPU)")
    p.add_argument("--calib-dir", help="images for int8 calibration (class subfolders allowed)")
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="keep an engine that fails parity (its manifest still says failed)")

    p = sub.add_parser("bench", help="latency percentiles, throughput and parity per model and runtime")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--target", action="append", help="repeatable (default: torch and onnxruntime)")
    p.add_argument("--batch", type=int, action="append", help="repeatable (default 1)")
    _precision_args(p)
    p.add_argument("--weights", help="checkpoint, when benchmarking one model")
    p.add_argument("--passes", default="default")
    p.add_argument("--runs", type=int, default=50, help="timed runs per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="artifacts", help="where engines are written")
    p.add_argument("--json", help="write results JSON here")

    p = sub.add_parser("doctor", help="which runtimes are installed, their versions and devices")
    p.add_argument("--json", action="store_true")

    sub.add_parser("passes", help="the graph passes and what each does")

    p = sub.add_parser("inspect", help="op histogram, opset, inputs and outputs of an ONNX file")
    p.add_argument("file")
    return parser


def cmd_list(args) -> int:
    from models import list_models
    from models.registry import aliases_of

    infos = list_models(args.family)
    if args.family and not infos:
        from deploy.errors import DeployError

        raise DeployError(f"no family {args.family!r}; families: hvt, deit, cvt, resnas")
    if args.json:
        print(json.dumps([{
            "name": i.name, "family": i.family, "aliases": aliases_of(i.name), "params_m": i.params_m,
            "macs_g": i.macs_g, "input_size": list(i.input_size), "published_top1": i.published_top1,
            "published_source": i.published_source, "notes": i.notes} for i in infos], indent=2))
        return 0
    rows = [("model", "family", "params M", "GMACs", "input", "top-1", "aliases / notes")]
    for i in infos:
        note = ", ".join(aliases_of(i.name)) + ("; " if aliases_of(i.name) and i.notes else "") + i.notes
        note = note if len(note) <= 60 else note[:57] + "..."  # the full text is in --json
        rows.append((i.name, i.family, f"{i.params_m:.3f}", f"{i.macs_g:.3f}", str(i.input_size[-1]),
                     f"{i.published_top1:.2f}" if i.published_top1 is not None else "-", note))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sources = sorted({i.published_source for i in infos if i.published_source})
    print("\ntop-1 sources: " + "; ".join(sources))
    print("params and MACs: this implementation, counted at batch 1 (MACs = FlopCounterMode FLOPs / 2)")
    return 0


def cmd_export(args) -> int:
    from deploy.export import ExportRequest, export

    request = ExportRequest(
        model=args.model, target=args.target, precision=args.precision, weights=args.weights,
        use_ema=args.use_ema, out=Path(args.out), passes=args.passes, opset=args.opset,
        batch=tuple(args.batch or (1, 4)), threads=args.threads, device=args.device, seed=args.seed,
        calib_dir=Path(args.calib_dir) if args.calib_dir else None, calib_samples=args.calib_samples,
        gate=args.gate,
    )
    result = export(request)
    m = result.manifest
    parity = m["parity"]
    print(f"artifact: {result.artifact_dir}")
    for record in m.get("onnx", {}).get("passes", []):
        print(f"pass {record['name']}: {record['changed']} change(s)")
    if parity.get("skipped"):
        print(f"parity: skipped ({parity['skipped']})")
    else:
        print(f"parity vs PyTorch ({m['precision']}, batches {', '.join(str(b['batch']) for b in parity['batches'])}): "
              f"{'PASS' if parity['passed'] else 'FAIL'}  max|err| {parity['max_abs']:.3g} "
              f"({parity['max_abs_rel']:.2g} of scale), cosine {parity['cosine']:.6f}, "
              f"top-1 agreement {parity['top1_agreement']:.2f}")
    if m["weights"]["source"] == "random-init":
        print("weights: random init (pass --weights for a checkpoint)")
    return 0 if parity.get("passed") is not False else EXIT_FAILED


def cmd_bench(args) -> int:
    from deploy import artifacts
    from deploy.bench import BenchSettings, format_table, run_bench
    from deploy.errors import DeployError

    if args.weights and len(args.models) != 1:
        raise DeployError("--weights applies to one model; bench one model at a time with its checkpoint")
    settings = BenchSettings(warmup_s=args.warmup, runs=args.runs, threads=args.threads, seed=args.seed)
    if args.json:
        artifacts.ensure_writable(Path(args.json).resolve().parent)

    def progress(cell):
        lat = cell.get("latency_ms") or {}
        extra = f"p50 {lat['p50']:.2f} ms" if lat else (cell.get("error") or "")
        print(f"  {cell['model']} {cell['target']} {cell['precision']} b{cell['batch']}: "
              f"{cell['status']} {extra}", file=sys.stderr, flush=True)

    report = run_bench(args.models, args.target or ["torch", "onnxruntime"], args.batch or [1],
                       args.precision, settings, Path(args.out), args.passes, args.weights, progress)
    print(format_table(report["results"]))
    if args.json:
        artifacts.write_json_atomic(Path(args.json), report)
        print(f"\nresults: {args.json}")
    return EXIT_FAILED if any(r["status"] == "failed" for r in report["results"]) else 0


def cmd_doctor(args) -> int:
    from deploy.doctor import format_report, runtime_report

    rows = runtime_report()
    print(json.dumps(rows, indent=2) if args.json else format_report(rows))
    return 0


def cmd_passes(args) -> int:
    from deploy.passes import available_passes
    from deploy.targets import TARGETS

    for graph_pass in available_passes().values():
        used = [t.name for t in TARGETS.values() if graph_pass.name in t.default_passes]
        print(f"{graph_pass.name}\n    {graph_pass.description}\n    default for: {', '.join(used) or '-'}")
    return 0


def cmd_inspect(args) -> int:
    from deploy.onnx_export import load_onnx, op_histogram, opset_of

    proto = load_onnx(Path(args.file))

    def shape(value) -> str:
        dims = value.type.tensor_type.shape.dim
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"

    print(f"{args.file}: opset {opset_of(proto)}, {len(proto.graph.node)} nodes, producer "
          f"{proto.producer_name} {proto.producer_version}")
    initializers = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name not in initializers:
            print(f"input  {value.name} {shape(value)}")
    for value in proto.graph.output:
        print(f"output {value.name} {shape(value)}")
    for op, count in op_histogram(proto).items():
        print(f"{count:6d}  {op}")
    return 0


COMMANDS = {"list": cmd_list, "export": cmd_export, "bench": cmd_bench, "doctor": cmd_doctor,
            "passes": cmd_passes, "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("DEPLOY_DEBUG") == "1"
    from deploy.errors import DeployError
    from models import ModelError
    from runtimes import RuntimeAdapterError

    try:
        return COMMANDS[args.command](args)
    except (DeployError, ModelError, RuntimeAdapterError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED if type(exc).__name__ == "ParityError" else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); re-run with --debug for the traceback",
              file=sys.stderr)
        return EXIT_FAILED
