"""A per-layer profile as results files and reports carry it: typed, and light (no runtime, no torch).

`LayerProfile` is one engine's profile at one batch, attributed to the model's modules: each part
(qkv, scores, softmax, MLP, ...) and each unit (a block, the stem, the head) with its share of the
profiled latency next to its share of the MACs, the runtime's op types, and the slowest nodes. A
results row carries this summary inline (a few KB); `groups` (unit x part) and `nodes` (every runtime
node) are only in the full profile file, which the row names in `file`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated

from pydantic import Field, TypeAdapter

from ..timing import NonNegative, Positive


def _absent(value: object) -> bool:
    return value is None


_OMITTED = Field(default=None, exclude_if=_absent)  # left out of the JSON when it has no value


@dataclass
class Share:
    """One slice of a profile: its time per inference and MACs, each as a share of the whole."""

    name: str  # the part ("qkv"), unit ("blocks.3"), group ("blocks.3/qkv") or runtime op type
    time_ms: NonNegative
    time_share: NonNegative  # of the profiled inference's wall time (`LayerProfile.total_ms`)
    macs: int = 0
    mac_share: NonNegative = 0.0
    nodes: int = 0  # runtime nodes in it
    area: Annotated[str | None, _OMITTED] = None  # for parts: attention, mlp, norm, embed, pool, head, ...


@dataclass
class NodeShare:
    """One runtime node: its time, and the module group its ONNX nodes belong to."""

    name: str
    op_type: str
    time_ms: NonNegative
    time_share: NonNegative
    group: str  # "blocks.3/qkv", or "other" when the runtime named no ONNX node
    kernel: Annotated[str | None, _OMITTED] = None
    onnx_nodes: Annotated[list[str] | None, _OMITTED] = None  # full profiles only


@dataclass
class LayerProfile:
    """One engine's per-layer profile at one batch, attributed to the model's modules."""

    runtime: str
    batch: int
    runs: int
    total_ms: NonNegative  # mean wall time of one profiled inference (separate from the timed runs)
    node_ms: NonNegative  # the sum of the runtime nodes' times
    coverage: NonNegative  # node_ms / total_ms: how much of the inference the nodes account for
    macs: int
    parts: list[Share]
    units: list[Share]
    op_types: list[Share]
    top_nodes: list[NodeShare]
    unassigned: list[str] = field(default_factory=list)  # runtime nodes in "other": no ONNX node named
    notes: list[str] = field(default_factory=list)  # why coverage is off, what the profiler cannot see
    threads: Annotated[int | None, _OMITTED] = None
    timed_ms: Annotated[Positive | None, _OMITTED] = None  # the cell's timed p50, when profiled by bench
    file: Annotated[str | None, _OMITTED] = None  # the full profile (groups, every node), when written
    groups: Annotated[list[Share] | None, _OMITTED] = None  # full profiles only
    nodes: Annotated[list[NodeShare] | None, _OMITTED] = None  # full profiles only

    def summary(self, file: str | None = None) -> LayerProfile:
        """This profile without its per-group and per-node lists (what a results row carries)."""
        return replace(self, groups=None, nodes=None, file=file)

    def part(self, name: str) -> Share | None:
        return next((share for share in self.parts if share.name == name), None)


PROFILE = TypeAdapter(LayerProfile)
