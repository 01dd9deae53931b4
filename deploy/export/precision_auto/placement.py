"""The Q/DQ placement rule: keep a layer's int8 only where it measures faster than leaving that layer float.

ModelOpt's ONNX autotune (`modelopt.onnx.quantization.autotune`) accepts a Q/DQ insertion scheme only when it makes
the TensorRT engine at least `Config.performance_threshold` times faster (default 1.02, "2% improvement
required"), and it decides per *region pattern*: structurally identical regions share one scheme. The same rule
here, with the same threshold, `THRESHOLD` = 1.02, measured with the runtime's own per-node profiler instead of one
engine build per scheme (a build per layer kind would spend `--auto-budget` at once):

- the int8 engine and an fp32 engine of the same pass list (so that layer for layer the graphs match) are
  profiled on the same inputs (`Runner.profile_layers`, its own session, medians over the runs);
- a runtime node's time goes to the MatMul/Gemm/Conv it computes (a fused QuantizeLinear-MatMul kernel is that
  MatMul's), else is split over its source nodes; a layer's int8 time is its kernel's plus its share of the
  QuantizeLinear/DequantizeLinear nodes that feed it (a Q/DQ pair feeding k layers counts 1/k to each);
- layers are grouped by kind, their module path with the block indices as `*` (every block's `attn.qkv` is
  one group), as ModelOpt groups regions by pattern; a group keeps int8 when float time / int8 time >= THRESHOLD,
  and otherwise all its layers are left float in the placed candidate, which is then gated and timed whole
  like every other candidate (the profile proposes, the interleaved timing decides).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx

from runtimes import ModelSource, ProfileRequest, Runner, RuntimeProfile

from ...data.images import seeded_batch
from ...passes import run_passes
from ...passes.quantize import QUANTIZED_OPS
from ...passes.scopes import module_path
from .. import onnx_export
from ..targets import resolve_passes
from .record import PlacementGroup, PlacementRecord
from .trial import SearchContext, Trial

THRESHOLD = 1.02  # ModelOpt autotune's Config.performance_threshold default
RULE = ("ModelOpt autotune's performance_threshold: a Q/DQ placement is kept only where it is at least "
        f"{THRESHOLD:g}x faster than the layer in float, decided per layer kind (ModelOpt: per region pattern)")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Placement:
    record: PlacementRecord
    floating: tuple[str, ...]  # module paths whose int8 was not faster

    @property
    def all_float(self) -> bool:
        return not any(group.kept for group in self.record.groups)


def place(context: SearchContext, int8: Trial, runs: int) -> Placement | None:
    """Profile `int8` and an fp32 engine of its pass list; None when the runtime cannot profile here."""
    assert int8.graph is not None and int8.build is not None
    quantized = onnx.load(str(int8.graph.path), load_external_data=False)
    reference = _float_twin(context, int8)
    feeds = [{onnx_export.INPUT_NAME: seeded_batch(context.job.input_size, 1, context.job.seed + 300 + i)}
             for i in range(2)]
    request = ProfileRequest(feeds, runs=runs, warmup=3)
    with int8.runner() as runner:
        if runner.profiling_unavailable():
            return None
        int8_times = node_times(runner.profile_layers(request), quantized)
    with reference as runner:
        float_times = node_times(runner.profile_layers(request), onnx.load(str(_twin_path(context)),
                                                                            load_external_data=False))
    return decide(quantized, int8_times, float_times, runs)


def _twin_path(context: SearchContext) -> Path:
    return context.work / "placement-fp32" / "graph.onnx"


def _float_twin(context: SearchContext, int8: Trial) -> Runner:
    """An fp32 engine of the int8 graph's passes without the int8 pass: its nodes are the int8 graph's layers."""
    assert context.key is not None
    job = context.job
    clean = context.cache.clean(context.key, lambda: onnx_export.clean_up(
        onnx_export.export_onnx(job.source.module, job.input_size, context.key.opset)))  # type: ignore[union-attr]
    passes = context.request.passes if context.request.passes != "auto" else "default"
    proto, _ = run_passes(clean, resolve_passes(job.target, passes, "int8"))
    path = _twin_path(context)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_export.save_onnx(proto, path)
    engine = path.parent / "engine"
    engine.mkdir()
    source = ModelSource(job.source.input_specs, job.source.output_names, onnx_path=path)
    build = job.backend.build(source, engine, job.options)
    return job.backend.load(engine, build.files[0], job.options, source.input_specs, source.output_names)


def node_times(profile: RuntimeProfile, model: onnx.ModelProto) -> dict[str, float]:
    """Each ONNX node's share of the profiled time: a runtime node's time goes to the compute nodes it runs
    (MatMul/Gemm/Conv), else is split over its source nodes."""
    ops = {node.name: node.op_type for node in model.graph.node}
    times: dict[str, float] = defaultdict(float)
    for runtime_node in profile.nodes:
        sources = [s for s in runtime_node.source_nodes if s in ops]
        compute = [s for s in sources if ops[s] in QUANTIZED_OPS] or sources
        for name in compute:
            times[name] += runtime_node.time_ms / len(compute)
    return dict(times)


def layer_kind(module: str) -> str:
    """A module path with its block indices as `*`: `stage1.blocks.3.attn.qkv` -> `stage1.blocks.*.attn.qkv`
    (a stage keeps its name: its layers have shapes of their own)."""
    return ".".join("*" if part.isdigit() else part for part in module.split("."))


def decide(quantized: onnx.ModelProto, int8_times: Mapping[str, float], float_times: Mapping[str, float],
           runs: int) -> Placement:
    """Per layer kind: float time against int8 time (the layers' kernels and their Q/DQ nodes)."""
    producer = {out: node for node in quantized.graph.node for out in node.output}
    users: dict[str, int] = defaultdict(int)
    for node in quantized.graph.node:
        for tensor in node.input:
            users[tensor] += 1
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"float": 0.0, "int8": 0.0, "layers": 0.0})
    modules: dict[str, set[str]] = defaultdict(set)
    for node in quantized.graph.node:
        feeding = [producer[i] for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"]
        module = module_path(node)
        if node.op_type not in QUANTIZED_OPS or not feeding or not module or node.name not in float_times:
            continue
        helpers = [(dq, 1.0 / users[dq.output[0]]) for dq in feeding]
        helpers += [(producer[dq.input[0]], share / users[dq.input[0]]) for dq, share in list(helpers)
                    if dq.input[0] in producer and producer[dq.input[0]].op_type == "QuantizeLinear"]
        kind = layer_kind(module)
        groups[kind]["float"] += float_times[node.name]
        groups[kind]["int8"] += int8_times.get(node.name, 0.0) + sum(
            int8_times.get(helper.name, 0.0) * share for helper, share in helpers)
        groups[kind]["layers"] += 1
        modules[kind].add(module)
    records, floating = [], []
    for kind, figures in groups.items():
        kept = figures["int8"] > 0 and figures["float"] / figures["int8"] >= THRESHOLD
        records.append(PlacementGroup(kind, int(figures["layers"]), round(figures["float"], 4),
                                      round(figures["int8"], 4), kept))
        if not kept:
            floating += sorted(modules[kind])
    profiled = (f"the int8 engine and an fp32 engine of the same passes, {runs} profiled runs each on seeded "
                "inputs, batch 1 (the runtime's profiler, medians per node)")
    return Placement(PlacementRecord(RULE, THRESHOLD, profiled, records), tuple(floating))
