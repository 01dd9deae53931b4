"""PyTorch reference backend: the model as a `torch.export` program (`model.pt2`), run on CPU."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import (
    Availability,
    Backend,
    BuildOptions,
    BuildResult,
    EngineLoadError,
    ModelSource,
    Runner,
    TensorSpec,
)


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, module, input_specs: list[TensorSpec], output_names: list[str],
                 threads: int | None = None):
        super().__init__()
        self.module = module
        self.input_specs = list(input_specs)
        self.output_names = list(output_names)
        self.threads = threads

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)

    def profiling_unavailable(self) -> str | None:
        return ("the PyTorch reference has no per-node profile here: its program is not the ONNX graph the other "
                "runtimes run (torch.profiler profiles it)")

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in self.input_specs]
        with torch.inference_mode():
            outputs = self.module(*args)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.numpy() for name, out in zip(self.output_names, outputs, strict=True)}


class TorchBackend(Backend):
    name = "torch"
    pip_extra = None
    precisions = ("fp32",)
    source_kind = "torch"
    engine_file = "model.pt2"

    def availability(self) -> Availability:
        import torch

        return Availability(True, torch.__version__, "", ("cpu",), can_build=True, can_run=True)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        import torch

        self.check_precision(options.precision)
        example = source.example_feed(batch=max(2, max(options.batch)))
        args = tuple(torch.from_numpy(example[s.name]) for s in source.input_specs)
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic = tuple({0: batch} for _ in args)
        program = torch.export.export(source.module.eval(), args, dynamic_shapes=dynamic)
        # Serialised in memory, then written by Python: torch's C++ file writer aborts the whole process
        # (exit 134) on a full disk, where a Python write raises an OSError the export stage reports.
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        (Path(out_dir) / self.engine_file).write_bytes(buffer.getvalue())
        return BuildResult(files=(self.engine_file,), details={"format": "torch.export program"})

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        import torch

        path = Path(artifact_dir) / engine_file
        try:
            module = torch.export.load(path).module()
        except Exception as exc:  # corrupt or foreign archive
            raise EngineLoadError(f"cannot load {path} as a torch.export program: {exc}") from None
        return TorchRunner(module, input_specs or [], output_names or [], threads=options.threads)
