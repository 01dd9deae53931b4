"""Which PyTorch module each ONNX node came from: the name scopes the dynamo exporter records, kept on.

`torch.onnx.export(dynamo=True)` writes, per node, `metadata_props` with the module path
(`pkg.torch.onnx.name_scopes`, e.g. `['', 'blocks.0', 'blocks.0.attn', 'blocks.0.attn.qkv', 'linear']`),
the module classes and a readable `namespace`. Later steps must not lose them: onnxslim rebuilds the
graph without node metadata (`restore` puts it back by output and node name), the onnxscript rewriter
merges the matched nodes' metadata into the nodes it creates, and nodes made by hand (Casts, Q/DQ pairs)
take theirs from a neighbour (`fill_missing`). Profiles and the precision debugger read `module_path`.
"""

from __future__ import annotations

import ast

import onnx

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
NAMESPACE = "namespace"
KEPT = (NAMESPACE, SCOPES, CLASSES)  # stack traces and fx text stay out: large, and nothing reads them


def metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in node.metadata_props}


def _set(node: onnx.NodeProto, values: dict[str, str]) -> None:
    del node.metadata_props[:]
    for key in KEPT:
        if key in values:
            node.metadata_props.add(key=key, value=values[key])


def restore(before: onnx.ModelProto, after: onnx.ModelProto) -> int:
    """Copy the scope metadata of `before`'s nodes onto `after`'s, matched by output then node name.

    Returns how many nodes of `after` have none (nodes a rewrite created from nothing).
    """
    by_output: dict[str, dict[str, str]] = {}
    by_name: dict[str, dict[str, str]] = {}
    for node in before.graph.node:
        values = metadata(node)
        if SCOPES in values:
            by_name[node.name] = values
            for output in node.output:
                by_output[output] = values
    missing = 0
    for node in after.graph.node:
        found = next((by_output[o] for o in node.output if o in by_output), None) or by_name.get(node.name)
        if found:
            _set(node, found)
        else:
            missing += 1
    return missing


def fill_missing(model: onnx.ModelProto) -> int:
    """Give nodes without scopes those of the node consuming their output (else producing their input).

    A Cast or a Q/DQ pair made by hand belongs to the layer it feeds. Returns how many nodes stay without.
    """
    producer = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for _ in range(4):  # chains of made-up nodes (Q -> DQ -> MatMul) settle within a few sweeps
        bare = [node for node in model.graph.node if SCOPES not in metadata(node)]
        for node in bare:
            neighbours = [c for o in node.output for c in consumers.get(o, [])]
            neighbours += [producer[i] for i in node.input if i in producer]
            donor = next((metadata(n) for n in neighbours if SCOPES in metadata(n)), None)
            if donor:
                _set(node, donor)
    return sum(1 for node in model.graph.node if SCOPES not in metadata(node))


def module_path(node: onnx.NodeProto) -> str | None:
    """The innermost PyTorch module a node came from (`blocks.0.attn.qkv`), or None if not recorded."""
    text = metadata(node).get(SCOPES)
    if not text:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    # The last entry names the op itself (e.g. "linear"); the ones before are module paths.
    paths = [s for s in scopes[:-1] if s]
    return paths[-1] if paths else ""
