"""Per-layer error of a low-precision graph against fp32's: what `debug-precision` reports and what
`--precision auto` ranks layers by.

Both graphs get every intermediate float tensor added as an output (onnxruntime's
`qdq_loss_debug.modify_model_output_intermediate_tensors`), run on the same inputs with ONNX Runtime
(`collect_activations`), and each tensor that exists in both (the passes keep names; Q/DQ and Cast
nodes add their own) is compared: SQNR = 10 log10(|fp32|^2 / |fp32 - low|^2) in dB, and cosine.

A layer's *added* error is the noise it adds beyond what its inputs carry (traced back through Q/DQ and
Cast nodes, whose outputs have no fp32 twin; a weight counts as exact), as a fraction of the signal:
error a layer merely passes on is not its fault. Its *drop* is the SQNR it loses against its inputs, in
dB. The layers that add the most, and the first that takes the signal under `FLOOR_DB` itself (its drop
reaches `jump_db`: it is not merely passing on its inputs' error), are named with the PyTorch module they
came from (the exporter's name scopes, which the passes keep). A healthy int8 graph loses a few dB per
attention MatMul and stays above the floor throughout.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..passes import scopes

JUMP_DB = 6.0  # a layer that multiplies the noise power by 4 adds the error rather than passing it on
FLOOR_DB = 20.0  # under this a tensor is badly wrong (1 % noise power): the error has jumped


@dataclass(frozen=True)
class LayerError:
    node: str
    op_type: str
    tensor: str
    module: str | None  # the PyTorch module path (`blocks.1.attn.qkv`), "" for the top level
    sqnr_db: float  # of this layer's output against fp32 (inf: identical)
    cosine: float
    drop_db: float  # SQNR lost in this layer, against its inputs' (inf: from exact inputs)
    added_noise: float  # noise power added here, as a fraction of the output's signal power


@dataclass(frozen=True)
class PrecisionReport:
    layers: list[LayerError]  # in graph order
    compared: int  # tensors with an fp32 twin
    samples: int
    jump_db: float

    @property
    def first_jump(self) -> LayerError | None:
        return next((layer for layer in self.layers
                     if layer.sqnr_db < FLOOR_DB and layer.drop_db >= self.jump_db), None)

    def worst(self, count: int = 5) -> list[LayerError]:
        return sorted(self.layers, key=lambda layer: -layer.added_noise)[:count]

    def output(self) -> LayerError | None:
        return self.layers[-1] if self.layers else None


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm else 1.0


def intermediate_tensors(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every float tensor of `model` on every feed, concatenated over the feeds (flattened per feed)."""
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    with tempfile.TemporaryDirectory(prefix="debug-precision-") as work:
        source, augmented = Path(work) / "model.onnx", Path(work) / "augmented.onnx"
        onnx.save_model(model, str(source))
        modify_model_output_intermediate_tensors(str(source), str(augmented))
        values = collect_activations(str(augmented), list(feeds))  # it iterates its reader: a list serves
    return {name: np.concatenate([np.asarray(v).ravel() for v in runs]) for name, runs in values.items()}


def compare_graphs(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]],
                   jump_db: float = JUMP_DB) -> PrecisionReport:
    """Per-layer error of `candidate` (low precision) against `reference` (fp32) on the same feeds."""
    expected, got = intermediate_tensors(reference, feeds), intermediate_tensors(candidate, feeds)
    shared = {name for name in expected.keys() & got.keys() if expected[name].shape == got[name].shape}
    quality = {name: (sqnr_db(expected[name], got[name]), _cosine(expected[name], got[name])) for name in shared}
    producer = {out: node for node in candidate.graph.node for out in node.output}
    constants = {t.name for t in candidate.graph.initializer}

    def upstream(tensor: str, seen: frozenset[str] = frozenset()) -> float:
        """The SQNR a value arrives with: its own if it has an fp32 twin, else the worst of what made it."""
        if tensor in quality:
            return quality[tensor][0]
        node = producer.get(tensor)
        if node is None or tensor in constants or tensor in seen:
            return math.inf
        return min((upstream(i, seen | {tensor}) for i in node.input if i), default=math.inf)

    layers = []
    for node in candidate.graph.node:
        for out in node.output:
            if out not in quality:
                continue
            own, cosine = quality[out]
            arriving = min((upstream(i) for i in node.input if i), default=math.inf)
            drop = 0.0 if math.isinf(own) else max(0.0, arriving - own)
            added = max(0.0, _noise(own) - _noise(arriving))
            layers.append(LayerError(node.name, node.op_type, out, scopes.module_path(node), own, cosine, drop, added))
    return PrecisionReport(layers, len(shared), len(feeds), jump_db)


def _noise(sqnr: float) -> float:
    return 0.0 if math.isinf(sqnr) else 10.0 ** (-sqnr / 10.0)
