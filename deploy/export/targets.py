"""Per-target export specs, in one readable place: opset, default passes, precisions.

A target spec says what graph a runtime wants. Passes here are defaults; `--passes` overrides them
(`none`, `default`, `auto`, a list `a,b`, or edits `+a,-b`). `python -m deploy passes` describes each.

Why each default list (measured on this 2-core Zen 5 machine at batch 1; scripts/bench_passes.py reruns it):
- every ONNX target gets the normalisation passes (`layernorm-fuse`, `gelu-fuse`, `einsum-to-matmul`,
  `batchnorm-fold`). Our exporter already writes LayerNormalization/Gelu at opset 20 and folds BatchNorm
  in PyTorch, so on the zoo they change nothing; on a foreign or older-exporter graph they give the
  runtime its single-op kernels, and fp16 LayerNorm its fp32 statistics.
- `attention-canonical` everywhere: one pre-scaled form (TensorRT's MHA fusion needs the scale before the
  first MatMul). ORT and OpenVINO fuse the scale into their MatMul kernels themselves, so on CPU it is
  worth 0-2% (the exporter's 3-D K transpose and its shape arithmetic go).
- onnxruntime adds `attention-ort-packed` (com.microsoft.Attention over the packed qkv weight; fires on
  DeiT/HVT/ViT-ResNAS, not CvT): DeiT-S 5% faster on one thread and 11% on two, HVT-S 3%, never slower
  beyond noise. Then `attention-ort-mha` (com.microsoft.MultiHeadAttention over separate Q/K/V; fires on
  CvT, whose q, k and v come from their own convolutional projections, and on nothing the packed pass
  has already taken): on CvT-13 with two threads it drops the head reshapes and transposes around each
  attention, 0.968x the default list's p50 and 0.957x its best round in one interleaved run (12 rounds;
  `python scripts/bench_passes.py cvt_13 --target onnxruntime --threads 2 --rounds 12 --runs 20
  --versus +attention-ort-mha`), and `auto` picked it in both of its runs on CvT-13. The other fused forms
  are `auto` candidates: ONNX `Attention` is 7% *slower* on CvT-13 with two threads (ORT's CPU kernel
  parallelises over batch x heads, and CvT's first stage has one head of 3136 queries); the folded scale
  is within noise.
- OpenVINO's CPU plugin tokenises attention into its own fused subgraph whatever the ONNX form, so
  fused ONNX ops and folded scales are only `auto` candidates there (within +-2%, no consistent sign).
- `pool1d-to-2d` everywhere: exact, drops two transposes per HVT pooling stage, and is what 2-D-only
  runtimes (ORT Core ML EP) need.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import DeployError

# Graph-level rewrites that cost nothing where they do not apply.
_NORMALIZATION = ("layernorm-fuse", "gelu-fuse", "einsum-to-matmul", "batchnorm-fold")
_ONNX_DEFAULT = ("pool1d-to-2d", *_NORMALIZATION, "attention-canonical")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    opset: int | None  # None: the target converts from PyTorch, not ONNX
    default_passes: tuple[str, ...]
    default_precision: str = "fp32"
    notes: str = ""
    # Passes the export stage appends after the selected ones for a precision whose ONNX graph it
    # converts itself (fp16 with fp32 islands for TensorRT's strongly typed route and ONNX Runtime).
    precision_passes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # What `--passes auto` measures besides `none` and `default`, written as --passes specs.
    auto_candidates: tuple[str, ...] = ()
    # A precision's own default pass list, where it differs from `default_passes`.
    precision_defaults: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def defaults_for(self, precision: str | None) -> tuple[str, ...]:
        return self.precision_defaults.get(precision or self.default_precision, self.default_passes)

    @property
    def precisions(self) -> tuple[str, ...]:
        """What the target's runtime adapter can build: the adapter is the one place that says so."""
        import runtimes

        return runtimes.get_backend(self.name).precisions


TARGETS: dict[str, TargetSpec] = {
    target.name: target
    for target in (
        TargetSpec("torch", None, (), notes="PyTorch reference, saved as a torch.export program"),
        TargetSpec(
            "onnxruntime", 20, (*_ONNX_DEFAULT, "attention-ort-packed", "attention-ort-mha"),
            notes="CPU execution provider; opset 20 keeps Gelu and LayerNormalization as single ops; fp16 is an "
                  "fp16 graph with fp32 islands (correct, not faster, on CPUs without fp16 arithmetic); int8 is the "
                  "CPU Q/DQ graph (int8-qdq-cpu), whose MatMuls and Convs the CPU EP runs as int8 kernels "
                  "(com.microsoft.Attention would hide the qkv MatMul from the quantizer, so int8 leaves it out)",
            precision_passes={"fp16": ("fp16-convert",), "int8": ("int8-qdq-cpu",)},
            precision_defaults={"int8": _ONNX_DEFAULT},
            auto_candidates=(  # the fused passes come off first so that each candidate names its own order
                "-attention-ort-packed,-attention-ort-mha",
                "-attention-ort-packed,-attention-ort-mha,+attention-split-qkv,+attention-fold-scale",
                "-attention-ort-packed,-attention-ort-mha,+attention-onnx",
                "-attention-ort-packed,-attention-ort-mha,+attention-split-qkv,+attention-ort-mha",
            ),
        ),
        TargetSpec(
            "openvino", 20, _ONNX_DEFAULT,
            notes="CPU plugin; fp32 pins INFERENCE_PRECISION_HINT=f32; fp16 compresses weights in the IR "
                  "(OpenVINO's own conversion), so the ONNX graph stays fp32",
            auto_candidates=(
                "+attention-split-qkv,+attention-fold-scale",
                "+attention-onnx",
            ),
        ),
        TargetSpec(
            "tensorrt", 20, _ONNX_DEFAULT, default_precision="fp16",
            notes="parser unsqueezes 1-D pooling itself; 2-D is explicit; fp16 is an fp16 graph with fp32 "
                  "LayerNorm/Softmax/reduction islands for the strongly typed network; int8 is the Q/DQ graph "
                  "(explicit quantization)",
            precision_passes={"fp16": ("fp16-convert",), "int8": ("int8-qdq",)},
            auto_candidates=(
                "+attention-split-qkv,+attention-fold-scale",
                "+attention-onnx",  # IAttention, TensorRT >= 10.14
            ),
        ),
        TargetSpec("coreml", None, (), default_precision="fp16",
                      notes="converted from torch.export; prediction only on macOS"),
        TargetSpec("executorch", None, (),
                   notes="torch.export lowered to XNNPACK (--option delegate=coreml: Core ML, runs on Apple only)"),
    )
}


def get_target(name: str) -> TargetSpec:
    if name not in TARGETS:
        import difflib

        close = difflib.get_close_matches(name, TARGETS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeployError(f"unknown target {name!r}{hint} (targets: {', '.join(TARGETS)})")
    return TARGETS[name]


def resolve_passes(target: TargetSpec, spec: str | None, precision: str | None = None) -> list[str]:
    """`default`/None, `none`, or a comma list: `a,b` replaces, `+a,-b` edits the default list.

    `auto` is not a list: the export stage measures `autotune.candidate_sets(target)` and keeps one.
    """
    if spec in (None, "", "default"):
        return list(target.defaults_for(precision))
    if spec == "none":
        return []
    if spec == "auto":
        raise DeployError("--passes auto is resolved by measuring candidates (deploy.autotune), not here")
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if all(item[0] in "+-" for item in items):
        passes = list(target.defaults_for(precision))
        for item in items:
            name = item[1:]
            if item[0] == "+" and name not in passes:
                passes.append(name)
            elif item[0] == "-" and name in passes:
                passes.remove(name)
        return passes
    if any(item[0] in "+-" for item in items):
        raise DeployError(f"--passes {spec!r}: either list passes, or edit the default with +name/-name")
    return items
