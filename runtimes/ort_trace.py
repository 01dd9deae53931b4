"""ONNX Runtime's profiler trace: profiled sessions, and their JSON read as typed per-kernel times and shapes.

A session with `enable_profiling` writes one JSON event per kernel call (`<node>_kernel_time`, with the op, its
input and output shapes) inside one `model_run` event per inference. `traced_nodes` reads them as one
`TracedNode` per kernel, its median time per inference; `trace_kernels` profiles a file on random inputs. The
ONNX Runtime backend's profiles and the kernel isolation (`ort_kernels`) both read traces here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .profiling import median_per_node

# ORT's trace names for tensor element types -> numpy.
TRACE_DTYPES = {"float": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
                "int8": np.int8, "uint8": np.uint8}


@dataclass(frozen=True)
class TraceSettings:
    """How a profiled run goes: intra-op threads, warm-up and profiled inferences, the inputs' seed."""

    threads: int
    runs: int = 20
    warmup: int = 5
    seed: int = 0


@dataclass(frozen=True)
class TracedNode:
    """One kernel of a profiled ORT run: its median time per inference and the shapes it was given."""

    name: str
    op_type: str
    time_ms: float
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, shape) per non-empty input
    output_shapes: tuple[tuple[int, ...], ...]


def trace_kernels(path: Path, settings: TraceSettings, optimized: Path | None = None,
                  optimize: bool = True) -> list[TracedNode]:
    """Every kernel's median time over `runs` profiled inferences, with its traced input shapes.

    `optimized`: also save ORT's optimized graph there. `optimize=False`: run the graph as it is (a node
    of a graph ORT has already optimized).
    """
    with _profiled_session(path, settings.threads, optimized, optimize) as session:
        feed = {value.name: _random(value.type.removeprefix("tensor(").rstrip(")"),
                                    tuple(d if isinstance(d, int) else 1 for d in value.shape), settings.seed)
                for value in session.get_inputs()}
        for _ in range(settings.warmup + settings.runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return traced_nodes(events, settings.runs)


@contextmanager
def _profiled_session(path: Path, threads: int, optimized: Path | None = None,
                      optimize: bool = True) -> Iterator[Any]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-trace-") as work:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.log_severity_level = 3  # an optimized NCHWc graph is machine-specific: ORT warns, we know
        options.profile_file_prefix = str(Path(work) / "ort")
        if optimized is not None:
            options.optimized_model_filepath = str(optimized)
        if not optimize:  # a node of an already optimized graph: run it as it is
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        yield ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def traced_nodes(events: list[dict[str, Any]], runs: int) -> list[TracedNode]:
    """Every kernel of an ORT trace (`enable_profiling`'s JSON events): its median time per inference over
    the last `runs` model runs (`median_per_node`, so a kernel run twice per inference counts twice) and
    the shapes its first traced call was given."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    per_run: list[dict[str, float]] = [{} for _ in windows]
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        run = next((i for i, (start, end) in enumerate(windows) if start <= event["ts"] <= end), None)
        if run is None:
            continue  # a warm-up run
        node = name[: -len("_kernel_time")]
        per_run[run][node] = per_run[run].get(node, 0.0) + event["dur"] / 1e3
        first.setdefault(node, event.get("args", {}))
    return [TracedNode(node, first[node].get("op_name", "?"), ms,
                       tuple(_shapes(first[node].get("input_type_shape", []))),
                       tuple(shape for _, shape in _shapes(first[node].get("output_type_shape", []))))
            for node, ms in median_per_node(per_run).items()]


def _shapes(entries: Sequence[dict[str, list[int]]]) -> Iterator[tuple[str, tuple[int, ...]]]:
    for entry in entries:
        for dtype, shape in entry.items():
            yield dtype, tuple(int(d) for d in shape)


def _random(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    kind = TRACE_DTYPES.get(dtype, np.float32)
    values = np.random.default_rng(seed).standard_normal(shape)
    return values.astype(kind) if np.issubdtype(kind, np.floating) else np.zeros(shape, dtype=kind)
