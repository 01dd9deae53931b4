"""What a per-layer profile reads from an artifact: the graph's nodes with their module scopes, and the MACs
of each module.

A profile maps runtime nodes back to ONNX nodes and ONNX nodes to modules, so it needs the graph's
node names, tensors and scopes, not its weights. ONNX Runtime's engine is the ONNX file itself; the other
ONNX-built engines (OpenVINO IR, TensorRT plans) keep neither names nor scopes, so the export stage writes
this table (`NODE_MAP`, a few hundred KB at most) into every ONNX-built artifact folder. Each module's own
MACs at batch 1 and its classes (`MODULE_MACS`) go into every artifact, so that a profile needs neither the
model's code nor its weights: an artifact of a user's own module profiles as one of the zoo's does.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from pydantic import TypeAdapter, ValidationError

from ..errors import DeployError
from ..fileio import write_text_atomic
from ..passes import scopes

NODE_MAP = "onnx_nodes.json"
MODULE_MACS = "module_macs.json"


@dataclass(frozen=True)
class NodeInfo:
    """One ONNX node: what it is, the tensors it reads and writes, and the PyTorch module it came from."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    module: str | None = None  # `blocks.0.attn.qkv`; "" for the model's own top level; None if not recorded
    classes: tuple[str, ...] = ()  # the module classes down to it, then the aten op (the exporter's record)
    domain: str = ""


_TABLE = TypeAdapter(list[NodeInfo])


def node_table(model: onnx.ModelProto) -> list[NodeInfo]:
    """Every node of the graph, in its (topological) order; weights are not inputs here."""
    weights = {t.name for t in model.graph.initializer}
    table = []
    for node in model.graph.node:
        classes = scopes.metadata(node).get(scopes.CLASSES)
        table.append(NodeInfo(node.name, node.op_type, tuple(i for i in node.input if i and i not in weights),
                              tuple(node.output), scopes.module_path(node), _listed(classes), node.domain))
    return table


def _listed(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ()
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()


def write_node_map(onnx_path: Path, folder: Path) -> str:
    """Write the table of `onnx_path`'s nodes into `folder`; returns the file's name."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    write_text_atomic(Path(folder) / NODE_MAP, json.dumps(_TABLE.dump_python(node_table(model), mode="json")))
    return NODE_MAP


def read_node_map(path: Path) -> list[NodeInfo]:
    return _read(path, _TABLE, "an ONNX node map")


def _read(path: Path, adapter: TypeAdapter[Any], what: str) -> Any:
    """A table the export stage wrote, validated; one error naming the file if it is unreadable or not `what`."""
    try:
        return adapter.validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (ValidationError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path} is not {what} ({str(exc).splitlines()[0]}); re-run export") from None


@dataclass(frozen=True)
class ModuleMacs:
    """One module's own MACs per aten op at batch 1 (its children's not included), and its classes from the root."""

    classes: tuple[str, ...]
    macs: dict[str, int]


_MODULES = TypeAdapter(dict[str, ModuleMacs])


def write_module_macs(module: Any, input_size: tuple[int, ...], folder: Path) -> str:
    """Count `module`'s MACs per module path (on the meta device) into `folder`; returns the file's name."""
    from models.complexity import macs_by_module, module_classes

    table = {path: ModuleMacs(module_classes(module, path), ops) for path, ops in
             macs_by_module(module, input_size).items()}
    write_text_atomic(Path(folder) / MODULE_MACS, json.dumps(_MODULES.dump_python(table, mode="json")))
    return MODULE_MACS


def read_module_macs(path: Path) -> dict[str, ModuleMacs]:
    return _read(path, _MODULES, "a module MAC table")
