"""Per-target export profiles, in one readable place: opset, default passes, precisions.

A profile says what graph a runtime wants. Passes here are defaults; `--passes` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DeployError


@dataclass(frozen=True)
class TargetProfile:
    name: str
    opset: int | None  # None: the target converts from PyTorch, not ONNX
    default_passes: tuple[str, ...]
    precisions: tuple[str, ...]
    default_precision: str = "fp32"
    notes: str = ""


TARGETS: dict[str, TargetProfile] = {
    profile.name: profile
    for profile in (
        TargetProfile("torch", None, (), ("fp32",), notes="PyTorch reference, saved as a torch.export program"),
        TargetProfile(
            "onnxruntime", 20, ("pool1d-to-2d",), ("fp32",),
            notes="CPU execution provider; opset 20 keeps Gelu and LayerNormalization as single ops",
        ),
        TargetProfile("openvino", 20, ("pool1d-to-2d",), ("fp32", "bf16", "fp16", "int8"),
                      notes="CPU plugin; fp32 pins INFERENCE_PRECISION_HINT=f32"),
        TargetProfile("tensorrt", 20, ("pool1d-to-2d",), ("fp32", "fp16", "int8"),
                      default_precision="fp16", notes="parser unsqueezes 1-D pooling itself; 2-D is explicit"),
        TargetProfile("coreml", None, (), ("fp16", "fp32", "int8"), default_precision="fp16",
                      notes="converted from torch.export; prediction only on macOS"),
    )
}


def get_target(name: str) -> TargetProfile:
    if name not in TARGETS:
        import difflib

        close = difflib.get_close_matches(name, TARGETS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeployError(f"unknown target {name!r}{hint} (targets: {', '.join(TARGETS)})")
    return TARGETS[name]


def resolve_passes(profile: TargetProfile, spec: str | None) -> list[str]:
    """`default`/None, `none`, or a comma list: `a,b` replaces, `+a,-b` edits the default list."""
    if spec in (None, "", "default"):
        return list(profile.default_passes)
    if spec == "none":
        return []
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if all(item[0] in "+-" for item in items):
        passes = list(profile.default_passes)
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
