"""The int8 Q/DQ recipe, change by change: ONNX Runtime's int8 over fp32 on the four families, and the real-data gate.

    python scripts/bench_int8_recipe.py --threads 2 --json int8_recipe.json
    python scripts/bench_int8_recipe.py hvt_s_1 cvt_13 --rounds 12 --runs 20

Each change of `deploy.passes.quantize.QdqRecipe` is one variant of the Q/DQ graph: TensorRT's rules (`trt`, the
previous ONNX Runtime graph), then the changes added one at a time (`u8`, `u8+conv`, `u8+conv+share`), and `share`
alone. For every model the fp32 engine (the target's default passes) and each int8 variant (the int8 default
passes plus the variant's quantization) are built as ONNX Runtime sessions, loaded together and timed in
interleaved rounds (`deploy.timing.interleaved_rounds`, order reversed every other round) at batch 1; reported are
p50 over all runs and the best round's median, and fp32 over int8 for both. Weights are random-init (seed 0),
calibrated on seeded noise, which is what the timing needs.

The real-data gate: each variant of the four digits references (trained, shipped) against PyTorch fp32 on the 450
held-out digits, calibrated on the training split as export calibrates: top-1 agreement must stay >= 99 %. A
change is kept (`quantize.CPU_RECIPE`) only where it is faster on every family and keeps the gate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from deploy.data.datasets import load_dataset  # noqa: E402
from deploy.data.images import seeded_batch  # noqa: E402
from deploy.export.accuracy import torch_logits  # noqa: E402
from deploy.export.onnx_export import clean_up, export_onnx  # noqa: E402
from deploy.export.targets import get_target  # noqa: E402
from deploy.passes import run_passes  # noqa: E402
from deploy.passes.quantize import Calibration, QdqRecipe, quantize_qdq  # noqa: E402
from deploy.timing import LatencyStats, TimingSettings, input_feeds, interleaved_rounds  # noqa: E402
from models import ModelRequest, load_model  # noqa: E402
from models.fuse import folded  # noqa: E402

VARIANTS = {
    "trt": QdqRecipe(),
    "u8": QdqRecipe(unsigned_activations=True),
    "u8+conv": QdqRecipe(unsigned_activations=True, quantize_conv=True),
    "u8+conv+share": QdqRecipe(unsigned_activations=True, quantize_conv=True, share=True),
    "share": QdqRecipe(share=True),
}
MODELS = ("hvt_s_1", "deit_s", "cvt_13", "vit_resnas_tiny")
DIGITS = ("hvt_digits", "deit_digits", "cvt_digits", "resnas_digits")


class Session:
    """An ONNX Runtime CPU session as a runner (`infer` on a feed)."""

    def __init__(self, model, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def infer(self, feed):
        return {"logits": self.session.run(None, feed)[0]}


def graphs(name: str, samples: list[np.ndarray]) -> dict[str, object]:
    """fp32 (the target's passes) and each int8 variant (the int8 passes plus the variant's Q/DQ) of `name`."""
    loaded = load_model(ModelRequest(model=name, seed=0))
    spec = get_target("onnxruntime")
    clean = clean_up(export_onnx(folded(loaded.module), loaded.card.input_size, spec.opset or 20))
    built: dict[str, object] = {"fp32": run_passes(clean, spec.defaults_for("fp32"))[0]}
    base, _ = run_passes(clean, spec.defaults_for("int8"))
    calibration = Calibration([{"input": image[None]} for image in samples])
    for label, recipe in VARIANTS.items():
        built[label] = quantize_qdq(base, calibration, recipe)[0]
    return built


def measure(name: str, args: argparse.Namespace) -> dict:
    input_size = load_model(ModelRequest(model=name, seed=0)).card.input_size
    started = time.perf_counter()
    built = graphs(name, list(seeded_batch(input_size, args.calib_samples, 1000)))
    print(f"  {name}: built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    runners = {label: Session(model, args.threads) for label, model in built.items()}
    settings = TimingSettings(warmup_s=args.warmup, runs=args.runs, buffers=4)
    load = [os.getloadavg()[0]]
    timed = interleaved_rounds(runners, input_feeds("input", input_size, 1, settings), settings, args.rounds)
    load.append(os.getloadavg()[0])
    row: dict = {"model": name, "threads": args.threads, "load_average": load}
    fp32 = (LatencyStats.of(timed.samples["fp32"]).p50, min(timed.medians["fp32"]))
    for label in runners:
        p50, best = LatencyStats.of(timed.samples[label]).p50, min(timed.medians[label])
        row[label] = {"p50": p50, "best_round": best, "speedup_p50": fp32[0] / p50, "speedup_best": fp32[1] / best}
    return row


def gate(name: str) -> dict:
    """Each variant's top-1 agreement with PyTorch fp32 on the 450 held-out digits."""
    loaded = load_model(ModelRequest(model=name))
    card = loaded.card
    test = load_dataset("digits", card.preprocessing)
    train = load_dataset("digits", card.preprocessing, 64, split="train")
    built = graphs(name, list(train.images))
    reference = torch_logits(loaded.module, test.images).argmax(-1)
    row = {"model": name}
    for label, model in built.items():
        if label == "fp32":
            continue
        session = Session(model, 2)
        logits = np.concatenate([session.infer({"input": test.images[i:i + 64]})["logits"]
                                 for i in range(0, len(test.images), 64)])
        row[label] = float((logits.argmax(-1) == reference).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--no-gate", dest="gate", action="store_false", help="skip the digits references")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr)
    rows = [measure(name, args) for name in args.models]
    gates = [gate(name) for name in DIGITS] if args.gate else []
    labels = ["fp32", *VARIANTS]
    print("fp32 p50 / int8 p50 (best-round ratio), batch 1, "
          f"{args.threads} threads, {args.rounds} interleaved rounds of {args.runs} runs")
    print(f"{'model':<16}" + "".join(f"{label:>22}" for label in labels[1:]) + "   fp32 p50 ms")
    for row in rows:
        cells = "".join(f"{row[label]['speedup_p50']:>13.2f}x ({row[label]['speedup_best']:.2f}x)"
                        for label in labels[1:])
        print(f"{row['model']:<16}{cells}   {row['fp32']['p50']:.2f}  (load {row['load_average'][0]:.1f}-"
              f"{row['load_average'][1]:.1f})")
    if gates:
        print("top-1 agreement with PyTorch fp32 on the 450 held-out digits (gate >= 99%)")
        for row in gates:
            print(f"{row['model']:<16}" + "".join(f"{100 * row[label]:>21.2f}%" for label in labels[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps({"timing": rows, "gate": gates}, indent=2))


if __name__ == "__main__":
    main()
