"""ExecuTorch backend: nn.Module -> torch.export -> edge program lowered to XNNPACK (or Core ML) -> `model.pte`.

The PyTorch-native route to phones: no ONNX and no ONNX passes. The export stage hands over the
BatchNorm-folded module; `executorch_lowering` shapes its decomposition so XNNPACK takes the zoo's
attention, pooling and reshapes; the manifest records which ops the delegate took and which stayed on
ExecuTorch's portable CPU kernels. The program runs here through `executorch.runtime` (XNNPACK is in the
pip wheel); the Core ML delegate builds anywhere and runs only in ExecuTorch's macOS/iOS builds.

Batch: one requested batch gives a static program; several give one method over a dynamic batch
(`forward`, batch 1 to the largest requested), unless `batch_shapes="enumerated"`: one static method per
batch (`forward` at the first, `batch_<n>` for the others) sharing their weights. A static method delegates
a little more (see executorch_lowering) at the cost of one lowering per batch.

Precisions:
- fp32.
- fp16: the module in half precision between an fp32 input cast and an fp32 output cast (the program
  takes and returns fp32, as every other engine). XNNPACK runs it in fp16 on CPUs it has fp16 kernels for
  (checked here on an x86 CPU with AVX512-FP16); where it has none, loading the method fails and the runner
  raises one RuntimeUnavailableError (ExecuTorch itself only logs the cause).
- int8: PT2E static quantization with ExecuTorch's `XNNPACKQuantizer` (symmetric int8, per-channel
  weights; torchao's `prepare_pt2e`/`convert_pt2e`) calibrated on `BuildOptions.calibration`. It quantizes
  the linears, convolutions, adds and multiplies; attention's batched matmuls and softmax stay fp32.
"""

from __future__ import annotations

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
    InputMismatchError,
    ModelSource,
    Runner,
    RuntimeAdapterError,
    RuntimeUnavailableError,
    TensorSpec,
    check_batches,
    first_line,
)
from .executorch_lowering import DELEGATE_IDS, LoweringJob, lower
from .options import RuntimeOptions, options_for
from .profiling import NodeTime, ProfileRequest, RuntimeProfile

BATCH_SHAPES = ("auto", "enumerated")
ENGINE_FILE = "model.pte"
ETRECORD_FILE = "etrecord.bin"


@dataclass(frozen=True)
class ExecuTorchOptions(RuntimeOptions):
    delegate: str = "xnnpack"  # or "coreml": ExecuTorch's Core ML partitioner (runs on Apple platforms only)
    batch_shapes: str = "auto"  # auto: static for one batch, dynamic for several; enumerated: a method per batch
    etrecord: bool = False  # also write etrecord.bin, which maps devtools' per-op times back to the graph

    def __post_init__(self) -> None:
        if self.delegate not in DELEGATE_IDS:
            raise RuntimeAdapterError(f"executorch delegate {self.delegate!r} is not one of {', '.join(DELEGATE_IDS)}")
        if self.batch_shapes not in BATCH_SHAPES:
            raise RuntimeAdapterError(f"batch_shapes {self.batch_shapes!r} is not one of {', '.join(BATCH_SHAPES)}")


@dataclass(frozen=True)
class BatchPlan:
    """The methods a program holds: name -> batch; `dynamic` means `forward` serves 1..max(batches)."""

    methods: dict[str, int]
    dynamic: bool

    @property
    def mode(self) -> str:
        return "dynamic" if self.dynamic else "enumerated" if len(self.methods) > 1 else "static"


def batch_plan(batch, batch_shapes: str) -> BatchPlan:
    batches = sorted(set(check_batches(batch)))
    if len(batches) == 1:
        return BatchPlan({"forward": batches[0]}, dynamic=False)
    if batch_shapes == "enumerated":
        return BatchPlan({"forward": batches[0], **{f"batch_{b}": b for b in batches[1:]}}, dynamic=False)
    return BatchPlan({"forward": batches[-1]}, dynamic=True)


def registered_backends() -> list[str]:
    from executorch.runtime import Runtime

    return list(Runtime.get().backend_registry.registered_backend_names)


def run_reason(delegate: str) -> str:
    """Why a program for `delegate` cannot run in this ExecuTorch runtime, or "" if it can."""
    name = DELEGATE_IDS[delegate]
    if name in registered_backends():
        return ""
    if delegate == "coreml":
        return "ExecuTorch's Core ML delegate runs only in its macOS/iOS builds (not registered in this runtime)"
    return f"this ExecuTorch runtime has no {name} (it has {', '.join(registered_backends()) or 'none'})"


def _op_type(event: str) -> str:
    """An ETDump event's op: "native_call_native_layer_norm.out" -> "native_layer_norm.out" (a portable kernel),
    "Fully Connected (NC, F32) GEMM #3" -> "Fully Connected (NC, F32) GEMM" (an XNNPACK operator)."""
    if event.startswith("native_call_"):
        return event.removeprefix("native_call_")
    return event.rsplit(" #", 1)[0]


def _kernel(event: str) -> str:
    # Without an ETRecord the events do not name their delegate; the portable kernels' are "native_call_*".
    return "portable" if event.startswith("native_call_") else "delegate"


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: Path, threads: int | None = None, output_names: list[str] | None = None):
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.output_names = list(output_names or ["logits"])
        self.program: Any = None
        self.methods: dict[str, Any] = {}
        self.max_batch: dict[str, int] = {}  # method -> batch its input was planned for

    def _activate(self) -> None:
        from executorch.runtime import Runtime

        if self.threads:
            from executorch.extension.pybindings import portable_lib

            # One process-wide XNNPACK threadpool; resetting it logs a line, so only when it changes.
            if portable_lib._threadpool_get_thread_count() != self.threads:
                portable_lib._unsafe_reset_threadpool(self.threads)
        try:
            self.program = Runtime.get().load_program(self.path)
        except Exception as exc:
            raise EngineLoadError(f"cannot load {self.path} as an ExecuTorch program: {first_line(exc)}") from None
        for method in sorted(self.program.method_names):
            sizes = tuple(self.program.metadata(method).input_tensor_meta(0).sizes())
            self.max_batch[method] = int(sizes[0])
            self.input_specs = [TensorSpec("input", (None, *sizes[1:]))]
        for method in self.max_batch:
            self.methods[method] = self._load_method(method)

    def _load_method(self, method: str):
        try:
            return self.program.load_method(method)
        except Exception as exc:
            # ExecuTorch logs the cause (an unregistered delegate, an fp16 kernel this CPU lacks) to stderr and
            # raises only an error code: say what the runtime has, which covers the common cause.
            raise RuntimeUnavailableError(
                f"executorch cannot load method {method!r} of {self.path.name} here ({first_line(exc)}); this "
                f"runtime has the delegates {', '.join(registered_backends()) or 'none'} (a Core ML program runs "
                "only in ExecuTorch's Apple builds; fp16 needs a CPU with fp16 support in XNNPACK)") from None

    def _deactivate(self) -> None:
        self.methods, self.program = {}, None

    def profiling_unavailable(self) -> str | None:
        return None

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """ETDump's per-op times (`executorch_profile`) from a second load of the program with tracing on."""
        from .executorch_profile import ETDumpRequest, profile_ops

        feed = np.ascontiguousarray(request.feed(0)[self.input_specs[0].name], dtype=np.float32)
        ops = profile_ops(ETDumpRequest(self.path, feed, runs=request.runs, method=self._method_for(len(feed))))
        nodes = [NodeTime(op.name, _op_type(op.name), op.median_ms, kernel=op.delegate or _kernel(op.name))
                 for op in ops]
        return RuntimeProfile("executorch", nodes, request.runs, total_ms=sum(n.time_ms for n in nodes),
                              threads=self.threads,
                              notes=["ETDump times ops, not whole inferences: the total is the ops' sum, without "
                                     "the runtime's bookkeeping between them"])

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = np.ascontiguousarray(feed[self.input_specs[0].name], dtype=np.float32)
        method = self._method_for(len(x))
        try:
            outputs = self.methods[method].execute([torch.from_numpy(x)])
        except RuntimeError as exc:
            raise InputMismatchError(f"executorch: {method} rejected batch {len(x)}: {first_line(exc)}") from None
        return {name: out.numpy() for name, out in zip(self.output_names, outputs, strict=True)}

    def _method_for(self, batch: int) -> str:
        if f"batch_{batch}" in self.methods:
            return f"batch_{batch}"
        static = len(self.methods) > 1  # enumerated methods are static; a lone forward may be dynamic
        if batch == self.max_batch["forward"] or (not static and batch < self.max_batch["forward"]):
            return "forward"  # a static lone forward rejects a smaller batch itself
        served = (", ".join(str(b) for b in sorted(self.max_batch.values())) if static
                  else f"up to {self.max_batch['forward']}")
        raise InputMismatchError(f"executorch: batch {batch} is not one this program serves ({served}); "
                                 "re-export with --batch")


class ExecuTorchBackend(Backend):
    name = "executorch"
    pip_extra = "executorch"
    precisions = ("fp32", "fp16", "int8")
    source_kind = "torch"
    options_type = ExecuTorchOptions
    engine_file = ENGINE_FILE

    def availability(self) -> Availability:
        try:
            from executorch.version import __version__
        except ImportError as exc:
            return Availability(False, None, f"executorch is not installed ({exc})")
        try:
            reason = run_reason("xnnpack")
        except ImportError as exc:  # a wheel without its prebuilt runtime
            return Availability(True, __version__, f"the ExecuTorch runtime does not load: {exc}", can_build=True)
        return Availability(True, __version__, reason, ("cpu",) if not reason else (), can_build=True,
                            can_run=not reason)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        self.check_precision(options.precision)
        if source.module is None:
            raise RuntimeAdapterError("executorch builds from the PyTorch module; ModelSource.module is None")
        settings = options_for(options.runtime, ExecuTorchOptions, "executorch")
        if options.precision == "int8" and settings.delegate != "xnnpack":
            raise RuntimeAdapterError("executorch int8 is XNNPACK's PT2E quantization; use delegate=xnnpack")
        plan = batch_plan(options.batch, settings.batch_shapes)
        if settings.etrecord and len(plan.methods) > 1:
            raise RuntimeAdapterError("etrecord needs a program with one method (ExecuTorch 1.5's Inspector cannot "
                                      "read a multi-method ETRecord); use batch_shapes=auto or one --batch")
        job = LoweringJob(source.module, source.input_specs, options.precision, plan.methods,
                                   plan.dynamic, options.calibration)
        lowered = lower(job, settings.delegate, settings.etrecord)
        out = Path(out_dir)
        (out / ENGINE_FILE).write_bytes(lowered.program)
        files = [ENGINE_FILE]
        if lowered.etrecord is not None:
            lowered.etrecord.save(str(out / ETRECORD_FILE))
            files.append(ETRECORD_FILE)
        reason = run_reason(settings.delegate)
        details = {"delegate": settings.delegate, "batch_mode": plan.mode, "methods": plan.methods, **lowered.details}
        return BuildResult(files=tuple(files), details=details,
                           batches=None if plan.dynamic else tuple(sorted(plan.methods.values())),
                           can_run_here=not reason, run_reason=reason or None)

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        path = self.existing_engine(artifact_dir, engine_file)
        return ExecuTorchRunner(path, threads=options.threads, output_names=output_names)

