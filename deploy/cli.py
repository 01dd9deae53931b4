"""`python -m deploy list | export | bench | report | compare | doctor | passes | inspect`.

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


def _bench_parsers(sub) -> None:
    p = sub.add_parser("bench", help="latency percentiles, throughput, memory, parity and accuracy per device")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: the --device profile's)")
    p.add_argument("--device", help="cpu | cuda | jetson | mac | auto, a user profile name or a .toml path: "
                   "runtimes, precisions, batches, timing and settings to record (refused if not on that device)")
    p.add_argument("--profiles", action="append", metavar="DIR", help="folder of user profiles (repeatable)")
    p.add_argument("--target", action="append", help="repeatable (default: the profile's, else torch and onnxruntime)")
    p.add_argument("--batch", type=int, action="append", help="repeatable (default: the profile's, else 1)")
    _precision_args(p)
    p.add_argument("--weights", help="checkpoint, when benchmarking one model")
    p.add_argument("--passes", default="default", help="default | none | auto | a,b | +a,-b (as for export)")
    p.add_argument("--runs", type=int, help="timed runs per cell (default: the profile's, else 50)")
    p.add_argument("--duration", type=float, help="time each cell for this many seconds instead of --runs")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default: the profile's, else 1)")
    p.add_argument("--buffers", type=int, help="input buffers rotated through (default 4)")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", help="top-1/top-5 per engine next to PyTorch's: 'digits' (shipped, for "
                   "hvt_digits) or an image folder with one subfolder per class")
    p.add_argument("--limit", type=int, help="at most this many dataset images (class-balanced)")
    p.add_argument("--out", default="artifacts", help="where engines (and, without --json, results) are written")
    p.add_argument("--json", help="results JSON, rewritten after every cell (default: OUT/bench-*.json)")
    p.add_argument("--csv", help="also write the results as CSV")
    p.add_argument("--md", help="also write the results as a markdown table")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: skip cells --json has")
    p.add_argument("--retry-failed", action="store_true", help="with --resume, run failed cells again")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="plain lines, no progress bar")

    p = sub.add_parser("report", help="HTML report with plots and the MAC-to-latency fidelity table")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("--out", required=True, help="folder for index.html and the PNG plots")
    p.add_argument("--baseline", default="deit_s", help="model the fidelity ratios are taken to (default deit_s)")
    p.add_argument("--metric", default="p50", choices=["p50", "p90", "p95", "p99", "mean", "min"],
                   help="latency statistic plotted and compared (default p50; min resists CPU contention)")

    p = sub.add_parser("compare", help="latency differences between two results JSONs; non-zero past a threshold")
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    p.add_argument("--max-slowdown", default="5%", help="fail past this slowdown (e.g. 5%%, 0.05)")
    p.add_argument("--metric", default="p50", choices=["p50", "p90", "p95", "p99", "mean", "min"])


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
    p.add_argument("--passes", default="default",
                   help="default | none | auto (measure the target's candidate pass sets here, keep the fastest "
                        "that passes parity) | a,b | +a,-b; `python -m deploy passes` lists them")
    p.add_argument("--opset", type=int, help="override the target's ONNX opset")
    p.add_argument("--threads", type=int, help="runtime threads")
    p.add_argument("--device", help="runtime device (e.g. OpenVINO CPU/GPU)")
    p.add_argument("--calib-dir", help="images for int8 calibration (class subfolders allowed)")
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="keep an engine that fails parity (its manifest still says failed)")

    _bench_parsers(sub)

    p = sub.add_parser("doctor", help="which runtimes are installed, their versions and devices")
    p.add_argument("--json", action="store_true")

    sub.add_parser("passes", help="the graph passes and what each does")

    p = sub.add_parser("inspect", help="op histogram, opset, inputs and outputs of an ONNX file")
    p.add_argument("file")
    return parser


def cmd_list(args) -> int:
    from models import list_models

    infos = list_models(args.family)
    if args.family and not infos:
        from deploy.errors import DeployError

        families = sorted({i.family for i in list_models()})
        raise DeployError(f"no family {args.family!r}; families: {', '.join(families)}")
    if args.json:
        print(json.dumps([{
            "name": i.name, "family": i.family, "aliases": list(i.aliases), "params_m": i.params_m,
            "macs_g": i.macs_g, "input_size": list(i.input_size), "published_top1": i.published_top1,
            "published_source": i.published_source, "published_params_m": i.published_params_m,
            "published_macs_g": i.published_macs_g, "notes": i.notes, "extra": i.extra} for i in infos], indent=2))
        return 0
    rows = [("model", "family", "params M", "GMACs", "input", "top-1", "aliases / notes")]
    for i in infos:
        note = ", ".join(i.aliases) + ("; " if i.aliases and i.notes else "") + i.notes
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
    auto = m.get("onnx", {}).get("auto")
    if auto:
        print(f"passes auto: chose {auto['winner']} ({auto['reason']})")
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
    from deploy import bench, fileio
    from deploy.errors import DeployError

    profile, detection = _bench_profile(args)
    names = args.models or list(profile.models if profile else [])
    if not names:
        raise DeployError("bench needs MODEL names, or a --device profile that names its models")
    if args.weights and len(names) != 1:
        raise DeployError("--weights applies to one model; bench one model at a time with its checkpoint")
    if args.retry_failed and not args.resume:
        raise DeployError("--retry-failed goes with --resume")
    if args.resume and not args.json:
        raise DeployError("--resume continues a results file: name it with --json")
    settings = _bench_settings(args, profile)
    device = _bench_device_record(profile, detection, settings)
    json_path = Path(args.json) if args.json else Path(args.out) / f"bench-{device['profile'] or 'run'}-{_stamp()}.json"
    outputs = [Path(p) for p in (json_path, args.csv, args.md) if p]
    for path in outputs:
        fileio.ensure_writable(path.resolve().parent)
    results = bench.ResultsFile(json_path, Path(args.csv) if args.csv else None, Path(args.md) if args.md else None)
    try:
        report = bench.run_bench(
            names, args.target or (list(profile.targets) if profile else ["torch", "onnxruntime"]),
            args.batch or (list(profile.batches) if profile else [1]), args.precision, settings, Path(args.out),
            args.passes, args.weights, precisions=profile.precisions if profile and not args.target else None,
            device=device, results=results, resume=args.resume, retry_failed=args.retry_failed,
            progress=bench.RichProgress() if args.progress else bench.LinePrinter())
    except KeyboardInterrupt:
        print(f"finished cells are saved in {json_path}; continue with --resume --json {json_path}", file=sys.stderr)
        raise
    print(bench.format_table(report["results"]))
    print("\nresults: " + ", ".join(str(p) for p in outputs))
    return EXIT_FAILED if any(r["status"] == "failed" for r in report["results"]) else 0


def _bench_profile(args):
    from deploy import profiles

    detection = profiles.detect()
    if not args.device:
        return None, detection
    return profiles.resolve_device(args.device, detection, [Path(p) for p in args.profiles or []]), detection


def _bench_settings(args, profile):
    from deploy.bench import BenchSettings
    from deploy.profiles import PowerSampler, Timing

    timing = profile.timing if profile else Timing(warmup_s=1.0, runs=50)

    def pick(given, default):
        return default if given is None else given

    return BenchSettings(
        warmup_s=pick(args.warmup, timing.warmup_s), runs=pick(args.runs, timing.runs),
        duration_s=pick(args.duration, timing.duration_s), min_runs=timing.min_runs,
        buffers=pick(args.buffers, timing.buffers), threads=pick(args.threads, profile.threads if profile else None),
        seed=args.seed, dataset=args.dataset, dataset_limit=args.limit,
        power=bool(profile and "power" in profile.record and PowerSampler.available()),
    )


def _bench_device_record(profile, detection, settings) -> dict:
    from deploy.profiles import device_settings

    device = device_settings(profile, detection, settings.threads)
    if profile and "power" in profile.record:
        device["power_sampling"] = "tegrastats" if settings.power else "not sampled: tegrastats is not on PATH"
    return device


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def cmd_report(args) -> int:
    from deploy.report import write_report

    page, fidelity = write_report([Path(p) for p in args.results], Path(args.out), baseline=args.baseline,
                                  metric=args.metric)
    print(fidelity)
    print(f"\nreport: {page}")
    return 0


def cmd_compare(args) -> int:
    from deploy.compare import compare_files, parse_threshold

    text, regressed = compare_files(Path(args.old), Path(args.new), parse_threshold(args.max_slowdown), args.metric)
    print(text)
    return EXIT_FAILED if regressed else 0


def cmd_doctor(args) -> int:
    from deploy.doctor import format_report, runtime_report

    rows = runtime_report()
    print(json.dumps(rows, indent=2) if args.json else format_report(rows))
    return 0


def cmd_passes(args) -> int:
    import textwrap

    from deploy.export.targets import TARGETS
    from deploy.passes import available_passes

    onnx_targets = [t for t in TARGETS.values() if t.opset is not None]
    passes = sorted(available_passes().values(), key=lambda p: (p.category, p.name))
    category = None
    for graph_pass in passes:
        if graph_pass.category != category:
            category = graph_pass.category
            print(f"[{category}]")
        used = [t.name for t in onnx_targets if graph_pass.name in t.default_passes]
        tried = [t.name for t in onnx_targets if t.name not in used and any(
            {graph_pass.name, "+" + graph_pass.name} & {item.strip() for item in spec.split(",")}
            for spec in t.auto_candidates)]
        appended = [f"{t.name} {precision}" for t in onnx_targets for precision, names in t.precision_passes.items()
                    if graph_pass.name in names]
        print(f"  {graph_pass.name}")
        print(textwrap.indent(textwrap.fill(graph_pass.description, 96), "      "))
        print(f"      default for: {', '.join(used) or '-'}"
              + (f"; tried by --passes auto on: {', '.join(tried)}" if tried else "")
              + (f"; appended for: {', '.join(appended)}" if appended else ""))
    print("\ntargets (--passes none | default | auto | a,b | +a,-b):")
    for t in onnx_targets:
        print(f"  {t.name} (opset {t.opset}): default {', '.join(t.default_passes) or '-'}")
        print(textwrap.indent(textwrap.fill(t.notes, 96), "      "))
        if t.auto_candidates:
            print(f"      auto also measures: none, default, {'; '.join(t.auto_candidates)}")
        for precision, names in t.precision_passes.items():
            print(f"      {precision} appends: {', '.join(names)}")
    return 0


def cmd_inspect(args) -> int:
    from collections import Counter

    import onnx

    from deploy.export.onnx_export import load_onnx, op_histogram, opset_of

    proto = load_onnx(Path(args.file))

    def shape(value) -> str:
        dims = value.type.tensor_type.shape.dim
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"

    def dtype(value) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name

    print(f"{args.file}: opset {opset_of(proto)}, {len(proto.graph.node)} nodes, producer "
          f"{proto.producer_name} {proto.producer_version}")
    others = [f"{o.domain} {o.version}" for o in proto.opset_import if o.domain not in ("", "ai.onnx")]
    print(f"IR version {proto.ir_version}" + (f"; other opsets: {', '.join(others)}" if others else ""))
    initializers = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name not in initializers:
            print(f"input  {value.name} {shape(value)} {dtype(value)}")
    for value in proto.graph.output:
        print(f"output {value.name} {shape(value)} {dtype(value)}")
    # Weights by element type: an fp16 graph with fp32 islands shows most weights as float16.
    weights = Counter()
    for tensor in proto.graph.initializer:
        count = 1
        for d in tensor.dims:
            count *= d
        weights[onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name] += count
    if weights:
        print("weights " + ", ".join(f"{n / 1e6:.3f} M {t}" for t, n in weights.most_common()))
    for op, count in op_histogram(proto).items():
        print(f"{count:6d}  {op}")
    return 0


COMMANDS = {"list": cmd_list, "export": cmd_export, "bench": cmd_bench, "report": cmd_report,
            "compare": cmd_compare, "doctor": cmd_doctor, "passes": cmd_passes, "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("DEPLOY_DEBUG") == "1"
    from deploy.errors import DeployError, ParityError
    from models import ModelError
    from runtimes import RuntimeAdapterError

    try:
        return COMMANDS[args.command](args)
    except (DeployError, ModelError, RuntimeAdapterError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, ParityError) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error. Point stdout at devnull so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); re-run with --debug for the traceback",
              file=sys.stderr)
        return EXIT_FAILED
