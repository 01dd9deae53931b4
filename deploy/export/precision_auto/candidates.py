"""What `--precision auto` builds on each runtime, simplest first: a `Recipe` per candidate.

- every runtime: fp32, then the reduced float precisions its adapter builds (fp16, bf16);
- ONNX Runtime and TensorRT (one Q/DQ graph, `int8-qdq`): int8 with each calibration method (minmax, entropy,
  percentile); TensorRT's candidates reach the adapter's strongly typed fp16 and Q/DQ int8 routes;
- OpenVINO (NNCF): int8 without SmoothQuant (the adapter's default), with it, and NNCF's own
  `quantize_with_accuracy_control` aiming at the goal (where there are labelled images to aim at);
- ExecuTorch: the XNNPACK quantizer's int8;
- then, built by the search as it measures: int8 with layers kept in float (`mixed`) on every runtime that can
  leave a layer float (a Q/DQ graph's excluded nodes, NNCF's ignored scope, the XNNPACK quantizer's filter),
  and for a Q/DQ graph the placement pruned to the layers where int8 is faster (`placement`).

Order is the tie-break: a candidate must beat every simpler one by more than the timing's tie margin to win.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ...passes.quantize import METHODS

Kind = Literal["plain", "runtime", "accuracy-control", "mixed", "placement"]
QDQ_TARGETS = ("onnxruntime", "tensorrt")  # int8 is the export stage's Q/DQ graph
MIXED_TARGETS = (*QDQ_TARGETS, "openvino", "executorch")  # int8 with some layers left in float
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Recipe:
    """One candidate engine: its precision, and how its int8 is made."""

    precision: str
    kind: Kind = "plain"
    method: str | None = None  # Q/DQ calibration: minmax, entropy or percentile
    smooth_quant: bool | None = None  # OpenVINO's NNCF: SmoothQuant on or off (None: the adapter's setting)
    keep_float: tuple[str, ...] = ()  # PyTorch module paths left in float

    @property
    def label(self) -> str:
        parts = [self.precision]
        if self.method:
            parts.append(self.method)
        if self.kind == "accuracy-control":
            parts.append("nncf accuracy-control")
        elif self.smooth_quant is not None:
            parts.append("nncf+smoothquant" if self.smooth_quant else "nncf")
        text = " ".join(parts)
        if self.kind == "placement":
            text += f", placed ({len(self.keep_float)} float)"
        elif self.keep_float:
            text += f", {len(self.keep_float)} layer{'s' if len(self.keep_float) > 1 else ''} float"
        return text

    def describe(self, target: str) -> str:
        """How the candidate is made, in words, for the manifest."""
        if self.precision != "int8":
            return {"fp32": "float32", "fp16": "float16 (the target's fp16 route)",
                    "bf16": "bfloat16 (the target's bf16 route)"}.get(self.precision, self.precision)
        if target in QDQ_TARGETS:
            base = f"Q/DQ int8 (onnxruntime.quantization), {self.method} calibration"
        elif target == "openvino":
            base = ("NNCF quantize_with_accuracy_control (it returns layers to float until the goal is met)"
                    if self.kind == "accuracy-control" else
                    f"NNCF int8, SmoothQuant {'on' if self.smooth_quant else 'off'}")
        elif target == "executorch":
            base = "XNNPACK quantizer int8 (PT2E)"
        else:
            base = "the runtime's int8"
        if self.kind == "placement":
            return base + "; layers kept float where int8 measured no faster (placement rule)"
        if self.keep_float:
            return base + "; the layers adding the most noise kept in float"
        return base

    def with_float(self, modules: tuple[str, ...], kind: Kind = "mixed") -> Recipe:
        return replace(self, kind=kind, keep_float=modules)


def base_recipes(target: str, precisions: tuple[str, ...], labelled: bool) -> list[Recipe]:
    """The candidates a runtime starts with (its adapter's `precisions`), simplest first; `labelled`: there are
    images to aim NNCF's accuracy control at."""
    recipes = [Recipe(p) for p in FLOAT_PRECISIONS if p in precisions]
    if "int8" not in precisions:
        return recipes
    if target in QDQ_TARGETS:
        recipes += [Recipe("int8", "runtime", method=method) for method in METHODS]
    elif target == "openvino":
        recipes += [Recipe("int8", "runtime", smooth_quant=False), Recipe("int8", "runtime", smooth_quant=True)]
        if labelled:
            recipes.append(Recipe("int8", "accuracy-control", smooth_quant=False))
    elif target == "executorch":
        recipes.append(Recipe("int8", "runtime"))
    return recipes
