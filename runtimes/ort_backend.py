"""ONNX Runtime backend: the engine is the rewritten ONNX file itself, run on the execution providers its
options name (`runtimes.ort_providers`: CPU by default; CUDA, TensorRT, OpenVINO with their wheels).

ONNX Runtime drops a provider it cannot use without failing, so every session's providers are checked against
the ones asked for: `build` opens one when a provider other than the CPU is asked for and records what it runs
on (`providers`, beside `requested_providers` and `provider_options`, in the build details), and every runner
checks its own session again, since an artifact may be loaded on another machine. A session that fell back is
refused, or with `on_fallback=warn` logged and recorded (`fallback`).

Profiles come from ORT's own profiler: a second session with `SessionOptions.enable_profiling`, whose
trace JSON holds each kernel's time per run (`<node>_kernel_time` events inside each `model_run`). ORT
runs its own optimized graph (fusions, NCHWc layout nodes), so that session also saves it
(`optimized_model_filepath`) and each optimized node is traced back to the ONNX nodes it computes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
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
from .options import options_for
from .ort_providers import OrtOptions, ProviderCheck, check_providers, provider_settings, session_providers
from .ort_trace import traced_nodes
from .profiling import NodeTime, ProfileRequest, RuntimeProfile, SourceNode, trace_sources

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}
log = logging.getLogger(__name__)


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, settings: OrtOptions | None = None,
                 precision: str = "fp32"):
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.settings = settings or OrtOptions()
        self.precision = precision
        self.session: Any = None
        self.providers: ProviderCheck | None = None  # what the timed session runs on, once active

    def _session_options(self):
        return session_options(self.threads)

    def _session(self, options):
        session, _ = open_session(self.path, options, provider_settings(self.settings, self.precision, self.threads))
        return session

    def _activate(self) -> None:
        # Profiling stays off: this is the timed session.
        requested = provider_settings(self.settings, self.precision, self.threads)
        self.session, self.providers = open_session(self.path, self._session_options(), requested)
        warning = check_providers(self.providers, self.settings.on_fallback)
        if warning:
            log.warning(warning)
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

    def profiling_unavailable(self) -> str | None:
        return None

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """Warm-up and profiled runs through a second session with ORT's profiler on; this runner's is untouched."""
        with tempfile.TemporaryDirectory(prefix="ort-profile-") as work:
            options = self._session_options()
            options.enable_profiling = True
            options.log_severity_level = 3  # ORT warns that an optimized NCHWc graph is machine-specific: known
            options.profile_file_prefix = str(Path(work) / "ort")
            options.optimized_model_filepath = str(Path(work) / "optimized.onnx")
            session = self._session(options)
            walls = []
            for i in range(request.warmup + request.runs):
                feed = {s.name: np.asarray(request.feed(i)[s.name], dtype=s.dtype) for s in self.input_specs}
                start = time.perf_counter()
                session.run(self.output_names, feed)
                walls.append((time.perf_counter() - start) * 1e3)
            events = json.loads(Path(session.end_profiling()).read_text())
            origins = trace_sources(_graph_nodes(self.path), _graph_nodes(Path(work) / "optimized.onnx"))
        traced = traced_nodes(events, request.runs)
        return RuntimeProfile(self.name, [NodeTime(node.name, node.op_type, node.time_ms, origins.get(node.name, ()))
                                          for node in traced], request.runs, float(np.median(walls[-request.runs:])),
                              threads=self.threads)


def session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def open_session(path: Path, options: Any, requested: list[tuple[str, dict[str, str]]]) -> tuple[Any, ProviderCheck]:
    """An InferenceSession on the requested providers this build has, and what it was asked for and runs on."""
    import onnxruntime as ort

    available = tuple(ort.get_available_providers())
    try:
        session = ort.InferenceSession(str(path), options, providers=session_providers(requested, available))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise EngineLoadError(
            f"onnxruntime cannot load {path} (corrupt or incompatible ONNX?): {first_line(exc)}"
        ) from None
    return session, ProviderCheck(tuple(name for name, _ in requested), tuple(session.get_providers()), available)


def _graph_nodes(path: Path) -> list[SourceNode]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [SourceNode(n.name, tuple(i for i in n.input if i), tuple(n.output)) for n in graph.node]


def _has_qdq(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


class OrtBackend(Backend):
    name = "onnxruntime"
    pip_extra = None  # part of the default install
    precisions = ("fp32", "fp16", "int8")
    source_kind = "onnx"
    options_type = OrtOptions
    engine_file = "model.onnx"

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, None, f"onnxruntime is not installed ({exc})")
        providers = tuple(ort.get_available_providers())
        return Availability(True, ort.__version__, "", can_build=True, can_run="CPUExecutionProvider" in providers,
                            providers=providers)

    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        self.check_precision(options.precision)
        onnx_path = self.onnx_input(source)
        if options.precision == "int8" and not _has_qdq(onnx_path):
            raise RuntimeAdapterError("onnxruntime int8 runs a Q/DQ ONNX graph (the export stage's int8-qdq pass); "
                                      "this graph has no QuantizeLinear/DequantizeLinear nodes")
        settings = options_for(options.runtime, OrtOptions, self.name)
        requested = provider_settings(settings, options.precision, options.threads)
        check = self._providers_here(onnx_path, requested, options.threads)
        fallback = check_providers(check, settings.on_fallback)  # refuses here, before anything is written
        shutil.copyfile(onnx_path, out_dir / self.engine_file)
        return BuildResult(files=(self.engine_file,), details={
            "providers": list(check.active), "requested_providers": list(check.requested),
            "provider_options": dict(requested), "fallback": fallback})

    @staticmethod
    def _providers_here(onnx_path: Path, requested: list[tuple[str, dict[str, str]]],
                        threads: int | None) -> ProviderCheck:
        """What a session of this graph runs on here. The CPU provider alone cannot fall back: no session."""
        names = tuple(name for name, _ in requested)
        if names == ("CPUExecutionProvider",):
            return ProviderCheck(names, names, names)
        _, check = open_session(onnx_path, session_options(threads), requested)
        return check

    def load(self, artifact_dir: Path, engine_file: str, options: BuildOptions,
             input_specs: list[TensorSpec] | None = None, output_names: list[str] | None = None) -> Runner:
        return OrtRunner(self.existing_engine(artifact_dir, engine_file), threads=options.threads,
                         settings=options_for(options.runtime, OrtOptions, self.name), precision=options.precision)
