"""The commands that export and look: list, export, doctor, passes, inspect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .options import accuracy_goal, chosen_precision, option_values, runtime_options

if TYPE_CHECKING:
    from deploy.export.manifest import ParityRecord, RealDataRecord
    from deploy.export.precision_auto.record import PrecisionAutoRecord
    from models import ModelRequest

EXIT_FAILED = 1


def cmd_list(args: argparse.Namespace) -> int:
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


def model_request(args: argparse.Namespace, model: str | None = None) -> ModelRequest:
    """The model the command line names: a zoo variant or folder, its fine-tune, a factory, labels, a name."""
    from deploy.errors import DeployError
    from models import ModelRequest

    model = model if model is not None else args.model
    if model is None and not args.model_factory:
        raise DeployError("give a MODEL (a zoo variant or a Hugging Face folder) or --model-factory MODULE:FUNCTION")
    factory = args.model_factory
    return ModelRequest(
        model=None if factory else model, name=args.name or (model if factory else None),
        weights=getattr(args, "weights", None), use_ema=getattr(args, "use_ema", None), num_classes=args.num_classes,
        img_size=args.img_size, factory=factory, labels=Path(args.labels) if args.labels else None,
        seed=getattr(args, "seed", None) or 0)


def cmd_export(args: argparse.Namespace) -> int:
    from deploy.errors import DeployError
    from deploy.export import ExportRequest, export

    precision, goal = chosen_precision(args), accuracy_goal(args)
    if precision != "auto" and args.auto_budget is not None:
        raise DeployError("--auto-budget caps the builds of --precision auto; add --precision auto or drop it")
    auto = {"auto_budget": args.auto_budget} if args.auto_budget is not None else {}
    request = ExportRequest(
        model=model_request(args), target=args.target, precision=precision, out=Path(args.out),
        passes=args.passes, opset=args.opset, batch=tuple(args.batch or (1, 4)), threads=args.threads,
        runtime_device=args.runtime_device, seed=args.seed, calib_dir=Path(args.calib_dir) if args.calib_dir else None,
        calib_samples=args.calib_samples, calib_method=args.calib_method, gated=args.gated,
        runtime_options=runtime_options(args.target, args.option), goal=goal, dataset=args.dataset, **auto,
    )
    result = export(request)
    manifest = result.manifest
    parity = manifest.parity
    print(f"artifact: {result.artifact_dir} ({manifest.status})")
    if manifest.precision_auto is not None:
        print(format_auto(manifest.precision_auto))
    model = manifest.model
    if model.base and model.overrides:
        print(f"model: {model.base} with " + ", ".join(f"{k} {v}" for k, v in model.overrides.items()))
    for line in model.inferred or []:
        print(f"inferred: {line}")
    for line in model.notes or []:
        print(f"note: {line}")
    if manifest.onnx and manifest.onnx.auto:
        print(f"passes auto: chose {manifest.onnx.auto.winner} ({manifest.onnx.auto.reason})")
    for record in manifest.onnx.passes if manifest.onnx else []:
        print(f"pass {record.name}: {record.changed} change(s)")
    if parity.skipped:
        print(f"parity: not run, so the engine is unverified ({parity.skipped})")
    else:
        batches = ", ".join(str(b["batch"]) for b in parity.batches or [])
        print(f"parity vs PyTorch ({manifest.precision}, batches {batches}): "
              f"{'PASS' if parity.passed else 'FAIL'}{_gate_note(parity)}  max|err| {parity.max_abs:.3g} "
              f"({parity.max_abs_rel:.2g} of scale), cosine {parity.cosine:.6f}, "
              f"top-1 agreement {parity.top1_agreement:.2f}")
    if parity.real_data is not None:
        real = parity.real_data
        print(f"real data: {real.images} {real.dataset} images, top-1 {100 * real.top1:.2f}% (PyTorch "
              f"{100 * real.reference_top1:.2f}%), agreement {100 * real.agreement:.2f}% "
              f"(gate: {_gate_text(real)})")
    if parity.note:
        print(f"note: {parity.note}")
    if manifest.weights.source == "random-init":
        print("weights: random init (pass --weights for a checkpoint)")
    return result.exit_code


def _gate_note(parity: ParityRecord) -> str:
    """What PASS or FAIL was judged on, when not the seeded figures on the same line: an int8 engine with a labelled
    set is gated on the images (next line), its seeded cosine (0.88 on one OpenVINO int8 digits engine) only
    recorded."""
    from deploy.export.gate import SEEDED_GATE

    if parity.gate is None or parity.gate == SEEDED_GATE:
        return ""
    return f" (gate: {parity.gate})"


def _gate_text(real: RealDataRecord) -> str:
    if real.max_drop is not None:
        return f"top-1 at most {100 * real.max_drop:.4g}% below PyTorch's"
    return f"agreement >= {100 * (real.min_agreement or 0):.4g}%"


def format_auto(record: PrecisionAutoRecord) -> str:
    """`--precision auto`'s choice, its goal, and every candidate as a table with the Pareto front marked."""
    from deploy.export.precision_auto.record import format_table

    chosen = record.chosen()
    lines = [f"precision auto: published {record.winner} ({record.precision}): {record.reason}",
             f"goal: {record.goal}" + ("" if record.accuracy_measured else
                                       "; accuracy was NOT measured (give --dataset for labelled images)"),
             f"candidates ({record.builds} built of --auto-budget {record.budget}, {record.seconds:.0f} s):",
             format_table(record)]
    if chosen.float_layers:
        lines.append("layers kept in float: " + ", ".join(chosen.float_layers))
    if record.ranking:
        lines.append("noisiest int8 layers: " + ", ".join(f"{layer.module} ({layer.sqnr_db:.1f} dB)"
                                                          for layer in record.ranking[:5]))
    lines += [f"note: {note}" for note in record.notes]
    return "\n".join(lines)


def cmd_debug_precision(args: argparse.Namespace) -> int:
    from deploy.diagnose.precision import format_report
    from deploy.diagnose.run import DebugRequest, debug_precision

    model = model_request(args)
    request = DebugRequest(model, args.target, args.precision, dataset=args.dataset, samples=args.samples,
                           calib_method=args.calib_method, calib_dir=Path(args.calib_dir) if args.calib_dir else None)
    report, inputs = debug_precision(request)
    print(f"{model.display_name} on {args.target} {args.precision} against fp32, on {inputs}")
    print(format_report(report, args.top))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from deploy.diagnose.profile import ProfileSettings, format_profile, profile_artifact, write_profile

    settings = ProfileSettings(batch=args.batch, runs=args.runs, warmup=args.warmup, threads=args.threads,
                               top=args.top)
    if args.json:
        from deploy.fileio import ensure_writable

        ensure_writable(Path(args.json).resolve().parent, "--json")
    profile = profile_artifact(Path(args.artifact), settings, _artifact_options(args))
    print(format_profile(profile, f"{args.artifact}: "))
    if args.json:
        write_profile(Path(args.json), profile)
        print(f"\nprofile: {args.json}")
    return 0


def _artifact_options(args: argparse.Namespace) -> dict[str, str]:
    """`--option` items for a command on one artifact: they override the options it was built with."""
    if not args.option:
        return {}
    from deploy.export.artifacts import read_manifest

    target = read_manifest(Path(args.artifact)).target
    return option_values(args.option, [target])[target]


def cmd_predict(args: argparse.Namespace) -> int:
    from deploy.predict import format_predictions, predict_files, predictions_json

    labels = None
    if args.labels:
        from deploy.export.artifacts import read_manifest
        from models.card import read_labels

        labels = read_labels(Path(args.labels), int(read_manifest(Path(args.artifact)).outputs[0].shape[-1] or 0))
    predictions = predict_files(Path(args.artifact), [Path(p) for p in args.images], top=args.top, labels=labels,
                                threads=args.threads, options=_artifact_options(args))
    print(json.dumps(predictions_json(predictions), indent=2) if args.json else format_predictions(predictions))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.cluster:
        from .cluster_commands import cluster_doctor

        return cluster_doctor(args)
    from runtimes.doctor import format_report, runtime_report

    rows = runtime_report()
    print(json.dumps(rows, indent=2) if args.json else format_report(rows))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
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
    for t in (t for t in TARGETS.values() if t.opset is None):
        print(f"  {t.name}: converts from the PyTorch module, takes no ONNX passes")
        print(textwrap.indent(textwrap.fill(t.notes, 96), "      "))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
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
    weights: Counter[str] = Counter()
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
