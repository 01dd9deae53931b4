"""Which part of the model each ONNX node (and each counted MAC) belongs to: module groups from name scopes.

A group is a *unit* (a block such as `blocks.3` or `stage1.blocks.0`, a CvT stage's `patch_embed`, the
`stem`, the `head`) and a *part* within it (`PARTS`). The unit comes from the node's module path, which the
dynamo exporter records and every pass keeps (`deploy.passes.scopes`); the part from the module's name
within its block, its classes and the op:

- `attn.qkv`, `attn.proj_q/k/v`, CvT's `attn.conv_proj_*` -> qkv; `attn.proj` -> proj;
- ops of the attention module itself: a fused attention op -> attention; Softmax -> softmax; a MatMul fed
  by the softmax -> context, any other MatMul and the scale -> scores; reshapes, transposes and splits ->
  attn-layout;
- `norm*` -> norm; `mlp` -> mlp; pooling ops and modules (HVT's MaxPool, ViT-ResNAS's spatial reduction)
  -> pool, with the reshapes next to them;
- other ops of a block or stage (residual adds) -> residual; nodes of the model's own top level -> the
  stem before the first block, the head after it; `norm`, `head`, `cls_head` at the top -> head.

A node without a recorded module is `other`. MACs (`models.complexity.macs_by_module`) go through the
same rules by module path; what a module's own scope computes in attention (the q.k and attn.v products,
one `scaled_dot_product_attention` on CPU) is split evenly between scores and context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from ..export.node_map import NodeInfo

# part -> (area, what it holds); the order is the report's.
PARTS: dict[str, tuple[str, str]] = {
    "embed": ("embed", "stem or patch embedding: convolutions, position embedding, cls token"),
    "norm": ("norm", "LayerNorms inside blocks"),
    "qkv": ("attention", "q, k, v projections (CvT: with their depthwise convolutions)"),
    "scores": ("attention", "q.k^T and its scale"),
    "softmax": ("attention", "softmax over the scores"),
    "context": ("attention", "attention-weighted values (attn.v)"),
    "attention": ("attention", "a fused attention op (ORT Attention, ONNX Attention, OpenVINO's attention "
                               "subgraph), with the parts it absorbed"),
    "attn-layout": ("attention", "head split and merge inside attention: reshapes, transposes, splits"),
    "proj": ("attention", "attention output projection"),
    "mlp": ("mlp", "MLP: fc1, activation, fc2"),
    "pool": ("pool", "token pooling (HVT) or spatial reduction (ViT-ResNAS) and its reshapes"),
    "residual": ("residual", "residual adds and other ops of a block or stage outside its sub-modules"),
    "head": ("head", "final norm, token mean or cls-token pick, classifier"),
    "module": ("module", "a top-level child of a model outside the zoo's families (its sub-modules included)"),
    "other": ("other", "nodes with no recorded module"),
}
# Parts of one attention that a fused op can absorb (their MACs move to it when it ran them).
ABSORBABLE = ("qkv", "scores", "softmax", "context", "attn-layout")
_CORE = {"scores", "softmax", "context", "attention"}

FUSED_ATTENTION_OPS = {"Attention", "MultiHeadAttention", "PackedAttention", "PackedMultiHeadAttention",
                       "GroupQueryAttention", "ScaledDotProductAttention", "SDPA"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Split", "Concat",
              "Slice", "Gather", "Shape", "Expand"}
_POOL_CLASS = re.compile(r"(SpatialReduction|Pool[123]d|Pooling)$")
_QKV = {"qkv", "q", "k", "v", "proj_q", "proj_k", "proj_v", "q_proj", "k_proj", "v_proj"}
_HEAD_MODULES = {"norm", "head", "cls_head", "fc_norm", "pre_logits", "classifier"}
_NO_STACK = "_empty_nn_module_stack"
# How much work an op does, for a runtime node that fuses nodes of several groups (the heaviest names it).
_WEIGHT = {**dict.fromkeys(("MatMul", "Gemm", "Conv", "FusedMatMul", "QLinearMatMul", "MatMulInteger"), 3),
           **dict.fromkeys(FUSED_ATTENTION_OPS, 3), "Softmax": 2, "LayerNormalization": 2}


class Group(NamedTuple):
    unit: str
    part: str

    @property
    def label(self) -> str:
        return "other" if self.part == "other" else f"{self.unit}/{self.part}"


OTHER = Group("other", "other")


def split_unit(path: str) -> tuple[str, list[str]] | None:
    """(unit, the path below it) for a module path inside a block or a stage's embedding; None elsewhere."""
    parts = path.split(".") if path else []
    for i, part in enumerate(parts):
        if part == "blocks" and i + 1 < len(parts) and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2]), parts[i + 2:]
        if part == "patch_embed":
            return ("stem" if i == 0 else ".".join(parts[: i + 1])), parts[i + 1:]
    return None


def _block_part(rest: list[str], classes: Sequence[str], op: str) -> str:
    """The part of a node (or a module's MACs) inside a block, from its path below the block."""
    if op in POOL_OPS or any(_POOL_CLASS.search(c) for c in classes):
        return "pool"
    if not rest:
        return "residual"
    head, below = rest[0], rest[1:]
    if head in ("attn", "attention"):
        if not below:
            return "attention-own"  # decided by the op and the graph
        if below[0] in _QKV or below[0].startswith("conv_proj"):
            return "qkv"
        return "proj" if below[0] in ("proj", "out_proj") else "attn-layout"
    if head.startswith("norm"):
        return "norm"
    if head in ("mlp", "ffn"):
        return "mlp"
    return "pool" if head in ("downsample", "pool") else "residual"


def _attention_part(node: NodeInfo, after_softmax: set[str]) -> str:
    if node.op_type in FUSED_ATTENTION_OPS:
        return "attention"
    if node.op_type == "Softmax":
        return "softmax"
    if node.op_type == "MatMul":
        return "context" if any(i in after_softmax for i in node.inputs) else "scores"
    if node.op_type in ("Mul", "Div", "Sqrt", "Add", "Where"):
        return "scores"
    return "attn-layout"


def classify_nodes(nodes: Sequence[NodeInfo]) -> dict[str, Group]:
    """Every ONNX node's group (a node without a recorded module is `OTHER`)."""
    foreign = foreign_top(n.module for n in nodes)
    if foreign is not None:
        return {node.name: foreign(node.module) for node in nodes}
    groups: dict[str, Group] = {}
    first_block = next((i for i, n in enumerate(nodes) if n.module and ".blocks." in f".{n.module}."), len(nodes))
    after_softmax = _downstream_of_softmax(nodes)
    for index, node in enumerate(nodes):
        groups[node.name] = _node_group(node, index, first_block, after_softmax)
    _adopt_neighbours(nodes, groups)
    return groups


def foreign_top(paths: Iterable[str | None]) -> Callable[[str | None], Group] | None:
    """For a model outside the zoo's families (no `blocks.N`, no `patch_embed`): group by its top-level children,
    below any wrapper every path shares (a Hugging Face classifier's `model.`); None for a zoo-like model."""
    known = [p for p in paths if p and not p.startswith(_NO_STACK)]
    if any(split_unit(p) is not None for p in known):
        return None
    split = [p.split(".") for p in known]
    shared = 0
    while split and all(len(parts) > shared + 1 for parts in split) and len({parts[shared] for parts in split}) == 1:
        shared += 1

    def group(path: str | None) -> Group:
        if path is None:
            return OTHER
        parts = path.split(".") if path and not path.startswith(_NO_STACK) else []
        top = parts[shared] if len(parts) > shared else ""
        if top in _HEAD_MODULES:
            return Group("head", "head")
        return Group(top or "model", "module")

    return group


def _node_group(node: NodeInfo, index: int, first_block: int, after_softmax: set[str]) -> Group:
    path = node.module
    if path is None:
        return OTHER
    if path.startswith(_NO_STACK):  # the exporter's placeholder for an op outside any module (a Shape)
        path = ""
    inside = split_unit(path)
    if inside is not None:
        unit, rest = inside
        if unit == "stem" or unit.endswith("patch_embed"):
            return Group(unit, "embed")
        part = _block_part(rest, node.classes, node.op_type)
        return Group(unit, _attention_part(node, after_softmax) if part == "attention-own" else part)
    top = path.split(".")[0] if path else ""
    if top in _HEAD_MODULES:
        return Group("head", "head")
    if not path:
        return Group("stem", "embed") if index < first_block else Group("head", "head")
    return Group(top, "residual")  # a stage's own ops (CvT's cls-token concatenation)


def _downstream_of_softmax(nodes: Sequence[NodeInfo]) -> set[str]:
    """Tensors computed from a softmax through layout ops only (what attn.v reads)."""
    reached = {t for n in nodes if n.op_type == "Softmax" for t in n.outputs}
    for node in nodes:  # topological order: one pass follows every chain
        if node.op_type in LAYOUT_OPS and any(i in reached for i in node.inputs):
            reached.update(node.outputs)
    return reached


def _adopt_neighbours(nodes: Sequence[NodeInfo], groups: dict[str, Group]) -> None:
    """Reshapes at a block's own level belong to the pooling they feed or follow, not to the residual."""
    producer = {t: n.name for n in nodes for t in n.outputs}
    users: dict[str, list[str]] = {}
    for node in nodes:
        for tensor in node.inputs:
            users.setdefault(tensor, []).append(node.name)
    for _ in range(4):
        for node in nodes:
            group = groups[node.name]
            if group.part != "residual" or node.op_type not in LAYOUT_OPS:
                continue
            near = [u for t in node.outputs for u in users.get(t, ())] + [producer[t] for t in node.inputs
                                                                          if t in producer]
            pooled = next((groups[n] for n in near if groups[n] == Group(group.unit, "pool")), None)
            if pooled:
                groups[node.name] = pooled


def runtime_group(sources: Sequence[str], groups: Mapping[str, Group], ops: Mapping[str, str]) -> Group:
    """The group of a runtime node that runs these ONNX nodes: theirs if they agree; a fused attention if they
    span an attention's core; else the group of the heaviest op among them (the first of equals)."""
    known = [(source, groups[source]) for source in sources if source in groups]
    if not known:
        return OTHER
    distinct = {group for _, group in known}
    if len(distinct) == 1:
        return known[0][1]
    units = {g.unit for g in distinct}
    parts = {g.part for g in distinct}
    if len(units) == 1 and parts <= {*ABSORBABLE, "attention"} and len(parts & _CORE) >= 2:
        return Group(known[0][1].unit, "attention")
    weights = [_WEIGHT.get(ops.get(source, ""), 1) for source, _ in known]
    return known[weights.index(max(weights))][1]


# aten op (as FlopCounterMode names it) -> the ONNX op it becomes, for the part rules
_ATEN_OPS = {"aten.convolution": "Conv", "aten.addmm": "Gemm", "aten.mm": "Gemm", "aten.bmm": "MatMul",
             "aten.baddbmm": "MatMul", "aten.matmul": "MatMul"}


def classify_macs(macs: Mapping[str, Mapping[str, int]],
                  classes_of: Callable[[str], Sequence[str]]) -> dict[Group, int]:
    """MACs per group, from each module's own MACs (`models.complexity.macs_by_module`)."""
    out: dict[Group, int] = {}
    foreign = foreign_top(macs)
    if foreign is not None:
        for path, ops in macs.items():
            group = foreign(path)
            out[group] = out.get(group, 0) + sum(ops.values())
        return out
    for path, ops in macs.items():
        for op, count in ops.items():
            for group, share in _mac_groups(path, classes_of(path), _ATEN_OPS.get(op, "MatMul")):
                out[group] = out.get(group, 0) + round(count * share)
    return out


def _mac_groups(path: str, classes: Sequence[str], op: str) -> list[tuple[Group, float]]:
    inside = split_unit(path)
    if inside is None:
        top = path.split(".")[0] if path else ""
        return [(Group("head", "head") if top in _HEAD_MODULES else OTHER, 1.0)]
    unit, rest = inside
    if unit == "stem" or unit.endswith("patch_embed"):
        return [(Group(unit, "embed"), 1.0)]
    part = _block_part(rest, classes, op)
    if part == "attention-own":  # q.k and attn.v: equal products for every attention in the zoo
        return [(Group(unit, "scores"), 0.5), (Group(unit, "context"), 0.5)]
    return [(Group(unit, part), 1.0)]
