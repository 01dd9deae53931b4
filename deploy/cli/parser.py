"""The command line's arguments: one sub-parser per command, `build_parser()` for all of them."""

from __future__ import annotations

import argparse

DESCRIPTION = "Export, rewrite, build and measure vision transformers on edge runtimes."
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
METRICS = ("p50", "p90", "p95", "p99", "mean", "min")


def _precision_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--precision", choices=PRECISIONS,
                       help="engine precision (default: the target's default)")
    for name in PRECISIONS:
        group.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                           help=f"same as --precision {name}")


def _device_profiles_arg(parser: argparse.ArgumentParser) -> None:
    # Device profiles (what a device is, for bench --device): not the per-layer profiles of --profile.
    parser.add_argument("--device-profiles", dest="profiles", action="append", metavar="DIR",
                        help="folder of user device profiles (repeatable)")
    parser.add_argument("--profiles", dest="profiles", action="append", help=argparse.SUPPRESS)  # the old spelling


def _model_args(parser: argparse.ArgumentParser) -> None:
    """What makes a model other than a zoo variant as registered: a fine-tune, a factory, labels, a name."""
    group = parser.add_argument_group("your own model")
    group.add_argument("--num-classes", type=int, metavar="N",
                       help="classes of a fine-tuned head (default: the checkpoint's, else the variant's)")
    group.add_argument("--img-size", type=int, metavar="S",
                       help="input size a model was fine-tuned at (default: the checkpoint's, else the variant's); "
                            "position embeddings of a checkpoint at another size are resampled")
    group.add_argument("--model-factory", metavar="MODULE:FUNCTION",
                       help="build the model with your own function (package.module:function or path/file.py:function) "
                            "returning an nn.Module; MODEL is then only its name")
    group.add_argument("--labels", metavar="FILE", help="class names, one a line, in the model's output order")
    group.add_argument("--name", help="the name its artifacts and results take (default: the model's)")


def _option_arg(parser: argparse.ArgumentParser, applies: str) -> None:
    parser.add_argument("--option", action="append", metavar="[TARGET.]KEY=VALUE",
                        help=f"a setting of a target's runtime adapter, repeatable ({applies}; e.g. num_streams=1 for "
                             "openvino, compute_units=CPU_AND_NE for coreml, providers=cuda,cpu for onnxruntime); "
                             "`python -m deploy doctor` lists each target's")


def _bench_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency percentiles, throughput, memory, parity and accuracy per device")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: the --device profile's)")
    p.add_argument("--device", action="append",
                   help="cpu | cuda | jetson | mac | auto, a user profile name or a .toml path: "
                   "runtimes, precisions, batches, timing and settings to record (refused if not on that device); "
                   "with --cluster, repeatable: each profile runs on the nodes labelled with its name")
    _device_profiles_arg(p)
    p.add_argument("--target", action="append", help="repeatable (default: the profile's, else torch and onnxruntime)")
    p.add_argument("--batch", type=int, action="append", help="repeatable (default: the profile's, else 1)")
    _precision_args(p)
    p.add_argument("--weights", help="checkpoint, when benchmarking one model")
    p.add_argument("--passes", help="default | none | auto | a,b | +a,-b (as for export; default: default)")
    p.add_argument("--runs", type=int, help="timed runs per cell (default: the profile's, else 50)")
    p.add_argument("--duration", type=float, help="time each cell for this many seconds instead of --runs")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default: the profile's, else 1)")
    p.add_argument("--buffers", type=int, help="input buffers rotated through (default 4)")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, help="seed of the timed and parity inputs (default 0)")
    p.add_argument("--dataset", help="top-1/top-5 per engine next to PyTorch's: 'digits' (shipped, for "
                   "the *_digits references) or an image folder with one subfolder per class")
    p.add_argument("--limit", type=int, help="at most this many dataset images (class-balanced)")
    p.add_argument("--out", help="where engines (and, without --json, results) are written (default: artifacts)")
    p.add_argument("--json", help="results JSON, rewritten after every cell (default: OUT/bench-*.json)")
    p.add_argument("--csv", help="also write the results as CSV")
    p.add_argument("--md", help="also write the results as a markdown table")
    p.add_argument("--resume", action="store_true",
                   help="continue the run --json records (its models, targets, batches and settings): skip the cells "
                        "it has; flags given beside it must agree with the file")
    p.add_argument("--retry-failed", action="store_true", help="with --resume, run failed cells again")
    p.add_argument("--retry", action="append", metavar="MODEL/TARGET/PRECISION[/BATCH]",
                   help="with --resume, run this cell again (repeatable), e.g. one timed under contention")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="plain lines, no progress bar")
    p.add_argument("--cluster", metavar="ADDRESS", help="run on a Ray cluster's device nodes (HEAD:PORT; "
                   "pip install -e .[cluster]): one results file for every device")
    p.add_argument("--fetch-artifacts", action="store_true",
                   help="with --cluster, copy each engine folder back into OUT/<device>@<host>/")
    p.add_argument("--profile", action="store_true", default=None,
                   help="also a per-layer profile of each engine at its first batch, through the runtime's own "
                        "profiler, in runs separate from the timed ones")
    _option_arg(p, "applied where each engine is built and loaded")
    _model_args(p)

    p = sub.add_parser("report", help="HTML report with plots and the MAC-to-latency fidelity table")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("--out", required=True, help="folder for index.html and the PNG plots")
    p.add_argument("--baseline", default="deit_s", help="model the fidelity ratios are taken to (default deit_s)")
    p.add_argument("--metric", default="p50", choices=METRICS,
                   help="latency statistic plotted and compared (default p50; min resists CPU contention)")

    p = sub.add_parser("compare", help="latency differences between two results JSONs; non-zero past a threshold")
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    p.add_argument("--max-slowdown", default="5%", help="fail past this slowdown (e.g. 5%%, 0.05)")
    p.add_argument("--metric", default="p50", choices=METRICS)
    p.add_argument("--allow-missing", action="store_true",
                   help="a cell OLD has and NEW lacks is listed, not a regression")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="the model zoo with params, MACs and published top-1")
    p.add_argument("--family", help="only this family (hvt, deit, cvt, resnas)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("export", help="model -> ONNX -> passes -> engine -> parity -> artifact folder")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a zoo variant (python -m deploy list), or a Hugging Face model folder")
    p.add_argument("--target", default="onnxruntime",
                   help="onnxruntime (default), openvino, tensorrt, coreml, executorch, torch")
    _precision_args(p)
    p.add_argument("--weights", help="checkpoint: .pth/.pt/.bin (torch.load, weights only) or .safetensors, or a "
                   "Hugging Face model folder; without it, random init (or the variant's shipped weights)")
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
    p.add_argument("--runtime-device", help="the runtime's own device (e.g. OpenVINO CPU/GPU); not a device profile")
    p.add_argument("--device", dest="runtime_device", help=argparse.SUPPRESS)  # the old spelling of --runtime-device
    _option_arg(p, "recorded in the manifest, restored on load")
    p.add_argument("--calib-dir", help="images for int8 calibration (class subfolders allowed)")
    p.add_argument("--calib-samples", type=int, default=64, help="int8 calibration samples (default 64)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="how int8 Q/DQ calibration turns activation ranges into scales (default minmax)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    p.add_argument("--no-gate", dest="gated", action="store_false",
                   help="keep an engine that fails parity (its manifest still says failed)")
    _model_args(p)

    _bench_parsers(sub)

    p = sub.add_parser("doctor", help="which runtimes are installed, their versions and devices")
    p.add_argument("--json", action="store_true")
    p.add_argument("--cluster", metavar="ADDRESS", help="every node of a Ray cluster instead: labels, detected device, "
                   "runtimes, whether each can build and run")
    _device_profiles_arg(p)
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="with --cluster, how long the nodes may take to answer (default 120; a node imports every "
                        "runtime to answer, which takes longer on a slow or busy machine)")

    p = sub.add_parser("worker", help="join this machine to a device farm (ray start, labelled from detection)")
    p.add_argument("--address", required=True, help="the Ray head, HOST:PORT")
    p.add_argument("--device", default="auto", help="the profile this node stands for (default auto: the kind "
                   "detected here); refused if this machine is not that kind of device")
    _device_profiles_arg(p)
    p.add_argument("--node-ip-address", help="this node's address as the cluster should reach it")
    p.add_argument("--dry-run", action="store_true", help="print the ray start command, do not run it")

    sub.add_parser("passes", help="the graph passes and what each does")

    p = sub.add_parser("debug-precision", help="where a low-precision graph loses accuracy: per-layer error vs fp32")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a zoo variant, or a Hugging Face model folder")
    p.add_argument("--target", default="onnxruntime", help="whose graph to debug (default onnxruntime)")
    p.add_argument("--precision", default="int8", choices=["fp16", "int8"], help="default int8")
    p.add_argument("--weights", help="checkpoint (default: the shipped one, else random init)")
    p.add_argument("--dataset", help="images to compare on (default: the model's shipped set, else seeded noise)")
    p.add_argument("--samples", type=int, default=16, help="inputs to compare on (default 16)")
    p.add_argument("--calib-dir", help="int8 calibration images, as for export")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--top", type=int, default=5, help="how many of the worst layers to list")
    _model_args(p)

    p = sub.add_parser("profile", help="where an engine's time goes: per-layer profile through its runtime's "
                       "profiler, attributed to the model's modules next to their MACs")
    p.add_argument("artifact", metavar="ARTIFACT_DIR", help="an artifact folder (artifacts/hvt_s_1/onnxruntime-fp32)")
    p.add_argument("--runs", type=int, default=20, help="profiled runs (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs before them (default 5)")
    p.add_argument("--threads", type=int, help="runtime threads (default: the runtime's)")
    p.add_argument("--batch", type=int, default=1, help="default 1")
    p.add_argument("--top", type=int, default=10, help="how many of the slowest nodes to list (default 10)")
    p.add_argument("--json", help="write the full profile (every module group and runtime node) to this file")
    _option_arg(p, "overriding those the artifact was built with")

    p = sub.add_parser("predict", help="classify images with an artifact, in its own preprocessing and labels")
    p.add_argument("artifact", metavar="ARTIFACT_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=5, help="how many classes to list per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line, instead of the artifact's")
    p.add_argument("--threads", type=int, help="runtime threads")
    _option_arg(p, "overriding those the artifact was built with")

    p = sub.add_parser("inspect", help="op histogram, opset, inputs and outputs of an ONNX file")
    p.add_argument("file")
    return parser
