"""int8 with layers kept in float: rank the layers by the noise each adds, return the worst to float until the goal
is met.

The ranking is `debug-precision`'s (`layer_error.compare_graphs`): the export stage's fp32 graph and its Q/DQ int8
graph (ONNX Runtime's passes, for a runtime that quantizes otherwise) run the same labelled images (or seeded
noise) with every intermediate tensor as an output, and each quantized layer's *added* noise (what its output
carries beyond what its inputs bring) is summed per PyTorch module. A runtime that quantizes the PyTorch module
(ExecuTorch) ranks only the modules its quantizer can leave out (those holding weights).

The search leaves the k worst modules in float: k = 1, 2, 4, ... until a candidate passes (or every ranked module
is float), then bisects between the largest failing k and the smallest passing one, each step one build, while
`--auto-budget` lasts. Fewer float layers is faster, so the smallest passing k is what it looks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from ...data.images import seeded_batch
from ...passes import run_passes
from ...passes.quantize import QUANTIZED_OPS, Calibration
from .. import onnx_export
from ..layer_error import compare_graphs
from ..targets import get_target, resolve_passes
from .candidates import QDQ_TARGETS, Recipe
from .record import LayerNoise
from .trial import SearchContext, Trial

RANKING_SAMPLES = 8  # every intermediate tensor of both graphs is held for each sample: keep it small


def ranking_graphs(context: SearchContext, recipe: Recipe) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The fp32 graph and the Q/DQ int8 graph that differ only in the int8 pass (debug-precision's pair)."""
    assert context.key is not None and context.feeds
    spec = context.job.target if context.target in QDQ_TARGETS else get_target("onnxruntime")
    job = context.job
    clean = context.cache.clean(context.key, lambda: onnx_export.clean_up(
        onnx_export.export_onnx(job.source.module, job.input_size, context.key.opset)))  # type: ignore[union-attr]
    passes = context.request.passes if context.request.passes != "auto" else "default"
    names = resolve_passes(spec, passes, "int8")
    appended = list(spec.precision_passes.get("int8", ("int8-qdq",)))
    fp32, _ = run_passes(clean, names)
    int8, _ = run_passes(clean, [*names, *appended], Calibration(context.feeds, recipe.method or "minmax"))  # type: ignore[arg-type]
    return fp32, int8


def rank_layers(context: SearchContext, recipe: Recipe) -> list[LayerNoise]:
    """Quantized modules, the noisiest first."""
    fp32, int8 = ranking_graphs(context, recipe)
    report = compare_graphs(fp32, int8, _inputs(context))
    dequantized = {out for node in int8.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    quantized = {node.name for node in int8.graph.node
                 if node.op_type in QUANTIZED_OPS and any(i in dequantized for i in node.input)}
    noise: dict[str, float] = {}
    worst: dict[str, float] = {}
    for layer in report.layers:
        if layer.node in quantized and layer.module:
            noise[layer.module] = noise.get(layer.module, 0.0) + layer.added_noise
            worst[layer.module] = min(worst.get(layer.module, np.inf), layer.sqnr_db)
    allowed = _leaves_with_weights(context) if context.job.backend.source_kind == "torch" else None
    ranked = [LayerNoise(module, noise[module], worst[module]) for module in noise
              if allowed is None or module in allowed]
    return sorted(ranked, key=lambda layer: -layer.added_noise)


def _inputs(context: SearchContext) -> list[dict[str, np.ndarray]]:
    name = onnx_export.INPUT_NAME
    if context.labelled is not None:
        # Spread over the set: its images are often grouped by class.
        picks = np.linspace(0, len(context.labelled) - 1, RANKING_SAMPLES).astype(int)
        return [{name: context.labelled.images[i][None]} for i in picks]
    return [{name: image[None]} for image in seeded_batch(context.job.input_size, RANKING_SAMPLES,
                                                          context.job.seed + 7)]


def _leaves_with_weights(context: SearchContext) -> set[str]:
    module = context.job.source.module
    return {name for name, sub in module.named_modules()
            if not list(sub.children()) and getattr(sub, "weight", None) is not None}


@dataclass
class MixedSearch:
    """The k worst layers in float, searched while builds last; what was tried and what passed."""

    base: Recipe
    ranked: list[str]
    trials: list[Trial] = field(default_factory=list)
    failing: int = 0  # largest k known to fail (0: full int8 failed)
    passing: int | None = None  # smallest k known to pass

    def run(self, build: Callable[[Recipe], Trial | None]) -> list[Trial]:
        """`build` makes and gates one recipe, or returns None when the budget is spent."""
        k = 1
        while self.passing is None and k <= len(self.ranked):
            if not self._try(k, build):
                return self.trials
            if k == len(self.ranked):
                break
            k = min(2 * k, len(self.ranked))
        while self.passing is not None and self.passing - self.failing > 1:
            if not self._try((self.failing + self.passing) // 2, build):
                break
        return self.trials

    def _try(self, k: int, build: Callable[[Recipe], Trial | None]) -> bool:
        trial = build(self.base.with_float(tuple(self.ranked[:k])))
        if trial is None:
            return False
        self.trials.append(trial)
        if trial.passed:
            self.passing = k
        else:
            self.failing = k
        return True
