"""The OpenVINO runner: a compiled model and its infer request, and its per-node profile.

Profiles come from the CPU plugin's own counters: a second compiled model with `PERF_COUNT` on, whose
request's `get_profiling_info()` gives each executed node's time after every inference. The plugin runs
its own graph (fused FullyConnected+Gelu, tokenised attention `Subgraph`s, inserted reorders); each of its
nodes names the IR operations it runs in its rt_info `originalLayersNames`, and those are traced back to
the ONNX nodes (the ONNX frontend keeps node names and tensor names).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import EngineLoadError, Runner, RuntimeAdapterError, TensorSpec
from .profiling import (
    NodeTime,
    ProfileRequest,
    RuntimeProfile,
    SourceNode,
    fill_from_neighbours,
    median_per_node,
    trace_sources,
)

_REPORTED_PROPERTIES = (
    "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
)


def one_line(exc: BaseException) -> str:
    """The most telling line of an OpenVINO exception (they start with 'Exception from file:line')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _tensor_spec(port) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except Exception:  # element types numpy cannot express (e.g. bf16 IO) read as float32
        dtype = "float32"
    return TensorSpec(port.get_any_name(), shape, dtype)


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, xml_path: Path, device: str, config: dict[str, Any]):
        super().__init__()
        self.xml_path = Path(xml_path)
        self.device = device
        self.config = dict(config)
        self.compiled: Any = None
        self.request: Any = None
        # What the plugin actually runs with, read back after compiling.
        self.effective: dict[str, str | None] = {}

    def _activate(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.xml_path))
        except Exception as exc:
            raise EngineLoadError(
                f"OpenVINO cannot read {self.xml_path} (corrupt or not an OpenVINO IR?): {one_line(exc)}"
            ) from None
        try:
            self.compiled = core.compile_model(model, self.device, self.config)
        except Exception as exc:
            raise EngineLoadError(f"OpenVINO cannot compile {self.xml_path} for {self.device}: "
                                  f"{one_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        self.input_specs = [_tensor_spec(port) for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        self.effective = {key: self._property(key) for key in _REPORTED_PROPERTIES}

    def _property(self, key: str) -> str | None:
        try:
            value = self.compiled.get_property(key)
        except Exception:  # not every device exposes every property
            return None
        # Element types print as "<Type: 'float32'>"; their short name ("f32") is what hints use.
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def _deactivate(self) -> None:
        self.request = None
        self.compiled = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {s.name: np.ascontiguousarray(feed[s.name], dtype=s.dtype) for s in self.input_specs}
        try:
            results = self.request.infer(inputs)
        except Exception as exc:
            raise RuntimeAdapterError(f"openvino: inference failed: {one_line(exc)}") from None
        # The request reuses its output tensors on the next call: copy them out.
        return {name: np.array(results[port]) for name, port in
                zip(self.output_names, self.compiled.outputs, strict=True)}

    def profiling_unavailable(self) -> str | None:
        return None

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """Runs through a second compiled model with PERF_COUNT on; this runner's (the timed one) has it off."""
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(self.xml_path))
        compiled = core.compile_model(model, self.device, {**self.config, "PERF_COUNT": True})
        infer = compiled.create_infer_request()
        kinds: dict[str, tuple[str, str]] = {}  # node -> (type, kernel)
        runs: list[dict[str, float]] = []
        walls = []
        for i in range(request.warmup + request.runs):
            feed = {s.name: np.ascontiguousarray(request.feed(i)[s.name], dtype=s.dtype) for s in self.input_specs}
            start = time.perf_counter()
            infer.infer(feed)
            walls.append((time.perf_counter() - start) * 1e3)
            if i >= request.warmup:  # the counters hold the last inference only
                runs.append(_executed(kinds, infer.get_profiling_info()))
        origins = _runtime_origins(compiled.get_runtime_model(), trace_sources(request.source, _graph_nodes(model)))
        nodes = [NodeTime(name, kinds[name][0], ms, origins.get(name, ()), kinds[name][1])
                 for name, ms in median_per_node(runs).items()]
        threads = self.config.get("INFERENCE_NUM_THREADS")
        return RuntimeProfile(self.name, nodes, request.runs, float(np.median(walls[request.warmup:])),
                              threads=int(threads) if threads else None)


def _executed(kinds: dict[str, tuple[str, str]], info) -> dict[str, float]:
    """One inference's counters: node -> ms, for the nodes that ran (fused ones report NOT_RUN)."""
    import openvino as ov

    times = {}
    for entry in info:
        if entry.status == ov.ProfilingInfo.Status.EXECUTED:
            kinds.setdefault(entry.node_name, (entry.node_type, entry.exec_type))
            times[entry.node_name] = entry.real_time.total_seconds() * 1e3
    return times


def _tensor_id(output) -> tuple[str, ...]:
    """A port's tensor names (the ONNX tensor names, kept by the ONNX frontend), or a made-up unique id."""
    names = sorted(output.get_names())
    return tuple(names) or (f"{output.get_node().get_friendly_name()}:{output.get_index()}",)


def _graph_nodes(model) -> list[SourceNode]:
    nodes = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            continue
        inputs = tuple(t for port in op.inputs() for t in _tensor_id(port.get_source_output()))
        nodes.append(SourceNode(op.get_friendly_name(), inputs, tuple(t for o in op.outputs() for t in _tensor_id(o))))
    return nodes


def _runtime_origins(runtime_model, ir_sources: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """runtime node -> ONNX nodes, through the IR operations its rt_info `originalLayersNames` lists."""
    found: dict[str, tuple[str, ...]] = {}
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        names = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        onnx_nodes = [n for layer in names.split(",") if layer for n in ir_sources.get(layer, ())]
        found[op.get_friendly_name()] = tuple(dict.fromkeys(onnx_nodes))
    return fill_from_neighbours(_graph_nodes(runtime_model), found)
