"""ONNX Runtime backend (CPU execution provider): the engine is the rewritten ONNX file itself."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
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
    TensorSpec,
    first_line,
)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: tuple[str, ...] = ()):
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.providers = providers or ("CPUExecutionProvider",)
        self.session: Any = None

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(self.providers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise EngineLoadError(
                f"onnxruntime cannot load {self.path} (corrupt or incompatible ONNX?): {first_line(exc)}"
            ) from None
        self.input_specs = [
            TensorSpec(i.name, tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                       _ORT_TYPES.get(i.type, "float32"))
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {s.name: np.asarray(feed[s.name], dtype=s.dtype) for s in self.input_specs}
        outputs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outputs, strict=True))


def _has_qdq(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


class OrtBackend(Backend):
    name = "onnxruntime"
    pip_extra = None  # part of the default install
    precisions = ("fp32", "fp16", "int8")
    source_kind = "onnx"
    engine_file = "model.onnx"

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, None, f"onnxruntime is not installed ({exc})")
        providers = tuple(ort.get_available_providers())
        return Availability(True, ort.__version__, "", providers, can_build=True,
                            can_run="CPUExecutionProvider" in providers)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        self.check_precision(options.precision)
        onnx_path = self.onnx_input(source)
        if options.precision == "int8" and not _has_qdq(onnx_path):
            raise RuntimeAdapterError("onnxruntime int8 runs a Q/DQ ONNX graph (the export stage's int8-qdq pass); "
                                      "this graph has no QuantizeLinear/DequantizeLinear nodes")
        shutil.copyfile(onnx_path, out_dir / self.engine_file)
        return BuildResult(files=(self.engine_file,), details={"providers": ["CPUExecutionProvider"]})

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        return OrtRunner(self.existing_engine(artifact_dir, engine_file), threads=options.threads)
