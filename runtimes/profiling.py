"""Per-node profiles through each runtime's own profiler: the typed records and the graph mapping they share.

The interface (every adapter, ExecuTorch's included when it lands, plugs in here):

- `Runner.profile_layers(ProfileRequest) -> RuntimeProfile` runs the request's feeds through a *separate*
  profiling engine of the same artifact (ONNX Runtime: a second `InferenceSession` with
  `enable_profiling`; OpenVINO: a second compiled model with `PERF_COUNT`; TensorRT: a second execution
  context with an `IProfiler`; Core ML: the compute plan). The runner's own session, which the benchmark
  times, never has profiling on, so profiling never inflates a reported latency.
- A runner that cannot profile says why in one line: `Runner.profiling_unavailable()` returns the
  reason, and `profile_layers` raises `ProfilingUnavailableError` with it.
- Each `NodeTime` names the nodes of the graph the engine was built from (`ProfileRequest.source`, the
  ONNX graph's nodes) that the runtime node executes; a fused node names all of them, a node the runtime
  made up (a layout reorder) takes those of its neighbour. Attributing them to model modules is the
  diagnosis stage's job (`deploy.diagnose`), not the adapter's.

`trace_sources` and `fill_from_neighbours` map a derived graph (ORT's optimized graph, OpenVINO's IR)
onto the source graph by node name, then by the tensors they produce; nothing here imports a runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import RuntimeAdapterError

# Sweeps of neighbour filling per direction: a decomposed node's chain of operations settles within these.
_FILL_SWEEPS = 16


class ProfilingUnavailableError(RuntimeAdapterError):
    """This runtime (or this machine) cannot produce a per-node profile; the message says why."""


@dataclass(frozen=True)
class SourceNode:
    """One node of a graph, as the mapping sees it: its name and the tensors it reads and writes."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile: the inputs to cycle through, how many warm-up and profiled runs, the source graph."""

    feeds: Sequence[Mapping[str, np.ndarray]]
    runs: int = 20
    warmup: int = 5
    source: tuple[SourceNode, ...] = ()  # the ONNX graph the engine was built from, in topological order

    def __post_init__(self) -> None:
        if not self.feeds:
            raise RuntimeAdapterError("a profile needs at least one input feed")
        if self.runs < 1 or self.warmup < 0:
            raise RuntimeAdapterError(f"profile runs must be >= 1 and warm-up >= 0, not {self.runs}/{self.warmup}")

    def feed(self, index: int) -> Mapping[str, np.ndarray]:
        return self.feeds[index % len(self.feeds)]


@dataclass(frozen=True)
class NodeTime:
    """One runtime node's time per inference: its median over the profiled runs."""

    name: str  # the runtime's own node or layer name
    op_type: str  # the runtime's op or layer type ("FullyConnected", "MatMul", "Subgraph")
    time_ms: float
    source_nodes: tuple[str, ...] = ()  # the source-graph nodes it executes; () if the runtime gives no clue
    kernel: str | None = None  # the implementation the runtime picked ("gemm_mlas_f32"), where it says


@dataclass(frozen=True)
class RuntimeProfile:
    """What a runtime's profiler measured: per-node times and the wall time of the profiled inferences."""

    runtime: str
    nodes: list[NodeTime]
    runs: int
    total_ms: float  # median wall time of a profiled inference (the runs the node times come from)
    threads: int | None = None
    notes: list[str] = field(default_factory=list)  # what the profiler could not see, and why

    @property
    def node_ms(self) -> float:
        return float(sum(node.time_ms for node in self.nodes))


def median_per_node(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each node's median time over the runs (0 in a run that did not report it), in first-seen order.

    Medians, not means: on a CPU other processes share, one preempted run would otherwise weigh on
    every node it touched.
    """
    names = list(dict.fromkeys(name for run in runs for name in run))
    return {name: float(np.median([run.get(name, 0.0) for run in runs])) for name in names}


def trace_sources(source: Sequence[SourceNode], derived: Sequence[SourceNode]) -> dict[str, tuple[str, ...]]:
    """For each node of `derived` (a rewritten copy of `source`), the `source` nodes it computes.

    A source node whose name survives maps to that node. One that vanished (fused, decomposed or folded
    away) maps to the derived node producing the first of its downstream tensors that still exists: a
    fused MatMul-Softmax-MatMul lands on the fused node that writes the chain's last surviving output.
    Derived nodes left with nothing take their neighbours' sources (`fill_from_neighbours`).
    """
    derived_names = {node.name for node in derived}
    producer = {tensor: node.name for node in derived for tensor in node.outputs}
    consumers: dict[str, list[SourceNode]] = {}
    for node in source:
        for tensor in node.inputs:
            consumers.setdefault(tensor, []).append(node)
    found: dict[str, list[str]] = {node.name: [] for node in derived}
    for node in source:
        owner = node.name if node.name in derived_names else _first_surviving(node, producer, consumers)
        if owner is not None:
            found[owner].append(node.name)
    return fill_from_neighbours(derived, {name: tuple(names) for name, names in found.items()})


def _first_surviving(node: SourceNode, producer: Mapping[str, str],
                     consumers: Mapping[str, list[SourceNode]]) -> str | None:
    """Breadth-first down the source graph from `node`'s outputs to a tensor the derived graph still has."""
    frontier, seen = list(node.outputs), set(node.outputs)
    while frontier:
        tensor = frontier.pop(0)
        if tensor in producer:
            return producer[tensor]
        for user in consumers.get(tensor, ()):
            for out in user.outputs:
                if out not in seen:
                    seen.add(out)
                    frontier.append(out)
    return None


def fill_from_neighbours(nodes: Sequence[SourceNode],
                         sources: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Nodes without sources take those of the nodes consuming their outputs, else of those feeding them.

    Consumers first, to a fixed point, and only then producers: the intermediate operations of a
    decomposed node (OpenVINO splits a fused Attention into MatMul, Split, ...) lead downstream to the
    operation that carries the node's name, while upstream they would reach the previous layer. A reorder
    the runtime inserted before a convolution likewise belongs to that convolution.
    """
    filled = {node.name: tuple(sources.get(node.name, ())) for node in nodes}
    producer = {tensor: node.name for node in nodes for tensor in node.outputs}
    users: dict[str, list[str]] = {}
    for node in nodes:
        for tensor in node.inputs:
            users.setdefault(tensor, []).append(node.name)
    downstream = {node.name: [u for t in node.outputs for u in users.get(t, ())] for node in nodes}
    upstream = {node.name: [producer[t] for t in node.inputs if t in producer] for node in nodes}
    for neighbours in (downstream, upstream):
        for _ in range(_FILL_SWEEPS):
            changed = False
            for node in nodes:
                if filled[node.name]:
                    continue
                donor = next((filled[n] for n in neighbours[node.name] if filled[n]), ())
                if donor:
                    filled[node.name], changed = donor, True
            if not changed:
                break
    return filled
