"""Core ML backend: nn.Module -> torch.export -> coremltools -> `model.mlpackage` (an ML program).

Conversion works anywhere coremltools installs (`coreml_convert`); prediction (`MLModel.predict`) exists only on
macOS, so on Linux the artifact is built and checked through `describe_mlprogram` instead of run.

Precisions: fp16 (Core ML's default, the only one the Neural Engine runs), fp32 (keeps the model
off the Neural Engine), int8 (fp16 compute with int8 linear-symmetric weights from
`coremltools.optimize.coreml.linear_quantize_weights`). The batch is static by default: the first
entry of `BuildOptions.batch`, recorded in the details. `CoreMLOptions(batch_shapes="enumerated")`
instead exports a dynamic batch and converts it to `ct.EnumeratedShapes` over every listed batch
(default: the first), which Core ML can still plan for the Neural Engine, unlike a RangeDim.
Inputs and outputs stay fp32 (a cast is inserted), so callers feed the same arrays as to every
other backend.

Profiles (macOS only): Core ML exposes no per-operation times, only its compute plan (`MLComputePlan`):
each operation's estimated share of the work and the device it is planned on. A profile spreads the
measured median wall time of a second, separately loaded model over the operations by those shares, and
says so in its notes.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Availability,
    Backend,
    BuildOptions,
    BuildResult,
    EngineLoadError,
    ModelSource,
    Runner,
    RuntimeAdapterError,
    RuntimeUnavailableError,
    TensorSpec,
    check_batches,
    first_line,
)
from .coreml_convert import (
    COMPUTE_UNITS,
    QUANTIZED_WEIGHT_OPS,
    compute_units,
    convert,
    deployment_target,
    describe_mlprogram,
    quantize_weights,
)
from .options import RuntimeOptions, options_for
from .profiling import NodeTime, ProfileRequest, RuntimeProfile

BATCH_SHAPES = ("static", "enumerated")
RUN_REASON = "Core ML prediction runs only on macOS"
# coremltools' default: weight tensors with fewer elements stay fp16 (small layers gain nothing).
DEFAULT_WEIGHT_THRESHOLD = 2048


def can_predict_here() -> bool:
    return platform.system() == "Darwin"


def static_batch(batch) -> int:
    """The batch a static Core ML program is built for: the first one listed (1 if none)."""
    return check_batches(batch or (1,))[0]


@dataclass(frozen=True)
class CoreMLOptions(RuntimeOptions):
    compute_units: str = "ALL"  # ALL, CPU_ONLY, CPU_AND_GPU or CPU_AND_NE
    minimum_deployment_target: str | None = None  # a `ct.target` name ("iOS18"); None: coremltools' default
    batch_shapes: str = "static"  # or "enumerated": one program for every requested batch
    int8_weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD  # smaller weight tensors stay fp16 at int8

    def __post_init__(self) -> None:
        units = self.compute_units.upper()
        if units not in COMPUTE_UNITS:
            raise RuntimeAdapterError(f"Core ML compute_units {units!r} is not one of {', '.join(COMPUTE_UNITS)}")
        object.__setattr__(self, "compute_units", units)
        if self.batch_shapes not in BATCH_SHAPES:
            raise RuntimeAdapterError(f"batch_shapes {self.batch_shapes!r} is not one of {', '.join(BATCH_SHAPES)}")
        if self.int8_weight_threshold < 0:
            raise RuntimeAdapterError(f"int8_weight_threshold must be >= 0, not {self.int8_weight_threshold}")


class CoreMLRunner(Runner):
    name = "coreml"

    def __init__(self, path: Path, units: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.units = units
        self.model: Any = None

    def _activate(self) -> None:
        if not can_predict_here():
            raise RuntimeUnavailableError(f"coreml: {RUN_REASON} (this is {platform.system()})")
        import coremltools as ct

        described = describe_mlprogram(self.path)
        try:
            self.model = ct.models.MLModel(str(self.path), compute_units=compute_units(self.units))
        except Exception as exc:
            raise EngineLoadError(f"Core ML cannot load {self.path}: {first_line(exc)}") from None
        # Enumerated batch shapes leave the batch dim open; Core ML checks the exact shape itself.
        self.input_specs = [TensorSpec(f["name"], (None, *f["shape"][1:]) if "enumerated_shapes" in f
                                       else f["shape"], "float32") for f in described["inputs"]]
        self.output_names = [f["name"] for f in described["outputs"]]

    def _deactivate(self) -> None:
        self.model = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {s.name: np.ascontiguousarray(feed[s.name], dtype=np.float32) for s in self.input_specs}
        outputs = self.model.predict(inputs)
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in self.output_names}

    def profiling_unavailable(self) -> str | None:
        return None if can_predict_here() else f"Core ML's compute plan needs macOS (this is {platform.system()})"

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """Estimated per-operation shares from the compute plan, times the median wall time of a second model."""
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        units = compute_units(self.units)
        model = ct.models.MLModel(str(self.path), compute_units=units)
        walls = []
        for i in range(request.warmup + request.runs):
            inputs = {s.name: np.ascontiguousarray(request.feed(i)[s.name], dtype=np.float32)
                      for s in self.input_specs}
            start = time.perf_counter()
            model.predict(inputs)
            walls.append((time.perf_counter() - start) * 1e3)
        total = float(np.median(walls[request.warmup:]))
        plan = MLComputePlan.load_from_path(model.get_compiled_model_path(), compute_units=units)
        producers = {tensor: node.name for node in request.source for tensor in node.outputs}
        nodes = []
        for op in _plan_operations(plan.model_structure.program.functions["main"].block):
            cost = plan.get_estimated_cost_for_mlprogram_operation(op)
            if cost is None or op.operator_name == "const":
                continue
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            name = op.outputs[0].name if op.outputs else op.operator_name
            device = type(usage.preferred_compute_device).__name__ if usage else None
            sources = tuple(producers[o.name] for o in op.outputs if o.name in producers)
            nodes.append(NodeTime(name, op.operator_name, cost.weight * total, sources, device))
        return RuntimeProfile(self.name, nodes, request.runs, total, notes=[
            "Core ML reports estimated shares of the work per operation, not times: each operation's time is its "
            "share of the measured median wall time"])


def _plan_operations(block):
    """Every operation of a compute plan's block, nested blocks included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _plan_operations(inner)


class CoreMLBackend(Backend):
    name = "coreml"
    pip_extra = "coreml"
    precisions = ("fp16", "fp32", "int8")
    source_kind = "torch"
    options_type = CoreMLOptions
    engine_file = "model.mlpackage"

    def availability(self) -> Availability:
        try:
            import coremltools as ct
        except ImportError as exc:
            return Availability(False, None, f"coremltools is not installed ({exc})")
        runs = can_predict_here()
        return Availability(True, ct.__version__, "" if runs else RUN_REASON,
                            ("ALL",) if runs else (), can_build=True, can_run=runs)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        self.check_precision(options.precision)
        if source.module is None:
            raise RuntimeAdapterError("coreml converts from the PyTorch module; ModelSource.module is None")
        settings = options_for(options.runtime, CoreMLOptions, "coreml")
        batch, batches = batch_plan(options)
        target_name = settings.minimum_deployment_target
        units_name = settings.compute_units
        mlmodel = convert(source, batch, batches, options.precision, compute_units(units_name),
                           deployment_target(target_name))
        if options.precision == "int8":
            mlmodel = quantize_weights(mlmodel, settings.int8_weight_threshold)
        path = Path(out_dir) / self.engine_file
        mlmodel.save(str(path))
        described = describe_mlprogram(path)
        _check_names(described, source)
        details = {"batch": batch, "batches": batches, "compute_units": units_name,
                   "minimum_deployment_target": target_name or "coremltools default",
                   **_build_details(described, options.precision, units_name)}
        here = can_predict_here()
        return BuildResult(files=(self.engine_file,), details=details, batches=tuple(batches), can_run_here=here,
                           run_reason=None if here else "Core ML predicts only on macOS")

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        path = self.existing_engine(artifact_dir, engine_file)
        return CoreMLRunner(path, units=options_for(options.runtime, CoreMLOptions, "coreml").compute_units)


def batch_plan(options: BuildOptions) -> tuple[int, list[int]]:
    """(default batch, batches the program accepts): static unless batch_shapes="enumerated"."""
    batch = static_batch(options.batch)
    mode = options_for(options.runtime, CoreMLOptions, "coreml").batch_shapes
    return batch, sorted(set(options.batch)) if mode == "enumerated" else [batch]


def _check_names(described: dict[str, Any], source: ModelSource) -> None:
    """The program takes and gives the names the export stage feeds and reads, or one error saying why not."""
    got = ([f["name"] for f in described["inputs"]], [f["name"] for f in described["outputs"]])
    want = ([s.name for s in source.input_specs], list(source.output_names))
    if got != want:
        import coremltools as ct

        raise RuntimeAdapterError(f"coremltools {ct.__version__} named the program's inputs/outputs {got}, not "
                                  f"{want}; the coreml extra needs coremltools >= 8.2")


def _build_details(described: dict[str, Any], precision: str, units_name: str) -> dict[str, Any]:
    ops = described["ops"]
    details = {
        "spec_version": described["spec_version"], "opset": described["opset"],
        "compute_precision": "fp32" if precision == "fp32" else "fp16",
        "weights": {"fp32": "fp32", "fp16": "fp16", "int8": "int8 linear_symmetric"}[precision],
        "quantized_weight_tensors": sum(ops.get(op, 0) for op in QUANTIZED_WEIGHT_OPS),
        "inputs": described["inputs"], "outputs": described["outputs"],
        "fused_attention": described["fused_attention"],
    }
    if precision == "fp32" and units_name in ("ALL", "CPU_AND_NE"):
        details["note"] = "fp32 programs do not run on the Neural Engine; Core ML uses CPU/GPU"
    return details
