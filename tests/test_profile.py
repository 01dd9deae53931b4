"""Per-layer profiles: scopes survive every pass, every node lands in a module group, MACs add up, the real ORT
and OpenVINO profilers cover their graphs, profiling stays out of the timed runs, and the results, report and
compare carry profiles."""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import small_cvt, small_hvt, small_resnas

from deploy.bench import BenchRequest, BenchSettings, ResultsFile, load_results, run_bench
from deploy.bench import group as group_module
from deploy.cli import main
from deploy.diagnose.attribution import OTHER, Group, classify_macs, classify_nodes, runtime_group
from deploy.diagnose.profile import attribute
from deploy.diagnose.records import PROFILE
from deploy.export.node_map import node_table
from deploy.export.onnx_export import clean_up, export_onnx
from deploy.export.targets import TARGETS
from deploy.passes import available_passes, run_passes, scopes
from deploy.passes.quantize import Calibration
from models.complexity import count_macs, macs_by_module, module_classes
from runtimes import NodeTime, RuntimeProfile, SourceNode
from runtimes.profiling import fill_from_neighbours, trace_sources
from runtimes.tensorrt.runner import layer_sources

# ---------------------------------------------------------------- small models of the three hierarchical families


SMALL = {"hvt": (small_hvt, (3, 32, 32)), "cvt": (small_cvt, (3, 64, 64)), "resnas": (small_resnas, (3, 28, 28))}


def _pass_lists() -> list[tuple[str, ...]]:
    """Every ONNX target's default list, its precision lists and its `auto` candidates, then any pass none of
    those runs appended to a default list: together they run every registered pass."""
    from deploy.export.targets import resolve_passes

    lists: dict[tuple[str, ...], None] = {}
    for target in TARGETS.values():
        if target.opset is None:
            continue
        lists[tuple(target.default_passes)] = None
        for precision, appended in target.precision_passes.items():
            lists[(*target.defaults_for(precision), *appended)] = None
        for spec in target.auto_candidates:
            lists[tuple(resolve_passes(target, spec))] = None
    covered = {name for names in lists for name in names}
    for name in sorted(set(available_passes()) - covered):
        lists[(*TARGETS["onnxruntime"].default_passes, name)] = None
    return list(lists)


@functools.cache
def _clean(family: str):
    build, shape = SMALL[family]
    model = build()
    return model, clean_up(export_onnx(model, shape, 20)), shape


@pytest.fixture(scope="module", params=list(SMALL))
def exported(request):
    model, clean, shape = _clean(request.param)
    return request.param, model, clean, shape


@pytest.mark.slow
def test_every_pass_keeps_every_nodes_module_scope(exported):
    family, _, clean, shape = exported
    lists = _pass_lists()
    assert set(available_passes()) <= {name for names in lists for name in names}
    feeds = [{"input": np.random.default_rng(i).standard_normal((1, *shape)).astype(np.float32)} for i in range(2)]
    for names in lists:
        graph, _ = run_passes(clean, names, Calibration(feeds, "minmax"))
        bare = collections.Counter(n.op_type for n in graph.graph.node if scopes.SCOPES not in scopes.metadata(n))
        assert not bare, f"{family}, passes {names}: nodes without a module scope: {dict(bare)}"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_every_onnx_node_of_the_zoo_lands_in_a_module_group(exported, target):
    family, _, clean, _ = exported
    graph, _ = run_passes(clean, TARGETS[target].default_passes)
    table = node_table(graph)
    groups = classify_nodes(table)
    assert set(groups) == {n.name for n in table}
    assert OTHER not in groups.values(), [n.name for n in table if groups[n.name] == OTHER]
    parts = collections.Counter(g.part for g in groups.values())
    assert parts["embed"] and parts["norm"] and parts["mlp"] and parts["proj"] and parts["head"]
    fused = any(n.op_type in ("Attention", "MultiHeadAttention") for n in table)  # ORT: packed; CvT: separate q, k, v
    assert parts["attention"] if fused else (parts["scores"] and parts["softmax"] and parts["context"])
    if family in ("hvt", "resnas"):
        assert parts["pool"], "token pooling / spatial reduction"
    by_op = {n.name: n.op_type for n in table}
    for name, group in groups.items():  # the MatMuls of an attention's own scope are q.k and attn.v
        if group.part in ("scores", "context") and by_op[name] == "MatMul":
            assert group.unit.split(".")[-2] == "blocks"


@pytest.mark.slow
def test_macs_per_group_add_up_to_the_models_macs(exported):
    family, model, _, shape = exported
    by_module = macs_by_module(model, shape)
    groups = classify_macs(by_module, lambda path: module_classes(model, path))
    assert sum(groups.values()) == pytest.approx(count_macs(model, shape), rel=1e-6)
    assert OTHER not in groups
    for unit in {g.unit for g in groups if g.part == "scores"}:  # SDPA's products split evenly
        assert groups[Group(unit, "scores")] == groups[Group(unit, "context")] > 0
    if family == "resnas":
        assert any(g.part == "pool" and macs for g, macs in groups.items()), "the spatial reduction's conv"


# ---------------------------------------------------------------- mapping runtime nodes back to ONNX nodes


def test_a_fused_chain_maps_to_the_node_that_writes_its_surviving_output():
    source = [SourceNode("q", ("x",), ("q",)), SourceNode("scores", ("q",), ("s",)),
              SourceNode("softmax", ("s",), ("p",)), SourceNode("context", ("p",), ("c",)),
              SourceNode("proj", ("c",), ("y",))]
    derived = [SourceNode("reorder", ("x",), ("x2",)), SourceNode("q", ("x2",), ("q",)),
               SourceNode("fused_attention", ("q",), ("c",)), SourceNode("proj", ("c",), ("y",))]
    found = trace_sources(source, derived)
    assert found["fused_attention"] == ("scores", "softmax", "context")
    assert found["q"] == ("q",) and found["proj"] == ("proj",)
    assert found["reorder"] == ("q",), "a made-up layout node belongs to the node it feeds"


def test_neighbours_fill_downstream_before_upstream():
    nodes = [SourceNode("norm", ("x",), ("n",)), SourceNode("matmul", ("n",), ("m",)),
             SourceNode("split", ("m",), ("s",)), SourceNode("attention", ("s",), ("a",))]
    filled = fill_from_neighbours(nodes, {"norm": ("norm",), "attention": ("attention",)})
    assert filled["matmul"] == filled["split"] == ("attention",)


def test_tensorrt_layers_name_their_onnx_nodes():
    order = ["node_a", "node_b", "node_c", "node_d"]
    assert layer_sources("fused", "[ONNX Layer: node_a]\x1f[ONNX Layer: node_b | foo]", order) == ("node_a", "node_b")
    assert layer_sources("{ForeignNode[node_b...node_d]}", "", order) == ("node_b", "node_c", "node_d")
    assert layer_sources("node_a + node_c", "", order) == ("node_a", "node_c")
    assert layer_sources("Reformatting CopyNode for Input Tensor 0", "", order) == ()


def test_a_runtime_node_spanning_an_attentions_core_is_fused_attention():
    groups = {"mm1": Group("blocks.0", "scores"), "sm": Group("blocks.0", "softmax"),
              "mm2": Group("blocks.0", "context"), "fc": Group("blocks.0", "mlp"), "gelu": Group("blocks.0", "mlp"),
              "add": Group("blocks.0", "residual"), "ln": Group("head", "head")}
    ops = {"mm1": "MatMul", "sm": "Softmax", "mm2": "MatMul", "fc": "MatMul", "gelu": "Gelu", "add": "Add",
           "ln": "LayerNormalization"}
    assert runtime_group(["mm1", "sm", "mm2"], groups, ops) == Group("blocks.0", "attention")
    assert runtime_group(["fc", "gelu"], groups, ops) == Group("blocks.0", "mlp")
    assert runtime_group(["add", "ln"], groups, ops) == Group("head", "head"), "the heavier op names it"
    assert runtime_group([], groups, ops) == OTHER and runtime_group(["unknown"], groups, ops) == OTHER


def test_shares_cover_the_profile_and_unnamed_nodes_are_other_by_name():
    table = node_table(run_passes(_clean("hvt")[1], TARGETS["openvino"].default_passes)[0])
    nodes = [NodeTime(n.name, n.op_type, 0.1, (n.name,)) for n in table] + [NodeTime("Reorder_7", "Reorder", 0.5)]
    measured = RuntimeProfile("fake", nodes, runs=3, total_ms=0.1 * len(table) + 0.5)
    profile = attribute(measured, table, {}, batch=1)
    assert profile.unassigned == ["Reorder_7"]
    assert sum(p.time_ms for p in profile.parts) == pytest.approx(profile.node_ms)
    assert sum(p.time_share for p in profile.parts) == pytest.approx(1.0)
    assert {n.group for n in profile.nodes or []} - {"other"} and profile.part("other").time_ms == pytest.approx(0.5)
    assert any("Reorder_7" in note for note in profile.notes)


# ---------------------------------------------------------------- real profilers, through bench --profile


@pytest.fixture(scope="module")
def profiled_bench(tmp_path_factory):
    """hvt_digits benchmarked on ONNX Runtime and OpenVINO with --profile; what ran when is recorded."""
    out = tmp_path_factory.mktemp("profiled")
    events: list[tuple[str, object]] = []
    real_timed, real_profile = group_module.timed_runs, group_module.profile_runner

    def timed(runner, feeds, settings):
        events.append(("timed", _profiling_state(runner)))
        samples = real_timed(runner, feeds, settings)
        events.append(("timed-end", _profiling_state(runner)))
        return samples

    def profiled(runner, *args, **kwargs):
        events.append(("profile", None))
        result = real_profile(runner, *args, **kwargs)
        events.append(("after-profile", _profiling_state(runner)))
        return result

    settings = BenchSettings(runs=3, warmup_s=0.0, threads=1, layer_profile=True)
    request = BenchRequest(["hvt_digits"], ["onnxruntime", "openvino"], [1, 2], settings, out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(group_module, "timed_runs", timed)
        patch.setattr(group_module, "profile_runner", profiled)
        run_bench(request, ResultsFile(out / "results.json"))
    return out, load_results(out / "results.json"), events


def _profiling_state(runner) -> bool:
    """Whether the runner's own (timed) engine has its runtime's profiler on."""
    if runner.name == "onnxruntime":
        return bool(runner.session.get_session_options().enable_profiling)
    return str(runner.compiled.get_property("PERF_COUNT")).upper() in ("YES", "TRUE")  # OpenVINO says "NO"


@pytest.mark.slow
def test_profiling_is_absent_from_the_timed_runs(profiled_bench):
    _, _, events = profiled_bench
    assert [kind for kind, _ in events] == ["timed", "timed-end"] * 2 + ["profile", "after-profile"] \
        + ["timed", "timed-end"] * 2 + ["profile", "after-profile"], "profiled once per engine, after every timed run"
    assert not any(state for _, state in events), "the timed session never has profiling on"


@pytest.mark.slow
def test_a_profiled_cell_covers_its_graph(profiled_bench):
    out, document, _ = profiled_bench
    rows = {(r.target, r.batch): r for r in document.results}
    for target in ("onnxruntime", "openvino"):
        summary = rows[(target, 1)].layer_profile
        assert summary is not None and rows[(target, 2)].layer_profile is None, "the first batch only"
        assert summary.nodes is None and summary.groups is None, "the row carries the summary"
        full = PROFILE.validate_json(Path(summary.file).read_text())
        assert full.runtime == target and full.batch == 1 and full.timed_ms == rows[(target, 1)].latency_ms.p50
        assert len(full.nodes) >= 20 and all(n.group for n in full.nodes)
        unnamed = [n.name for n in full.nodes if n.group == "other"]
        assert unnamed == full.unassigned, "every node is in a module group, or other by its name"
        assert sum(p.time_ms for p in full.parts) == pytest.approx(full.node_ms)
        assert sum(g.time_ms for g in full.groups) == pytest.approx(full.node_ms)
        assert abs(full.coverage - 1) <= 0.1 or any("account for" in n or "concurrently" in n for n in full.notes)
        assert sum(p.macs for p in full.parts) == full.macs == 5616640  # hvt_digits at batch 1
        parts = {p.name for p in full.parts if p.time_ms > 0}
        assert {"embed", "mlp", "proj", "pool", "head"} <= parts
        assert "attention" in parts, "ORT's packed Attention, OpenVINO's attention subgraph"
        fused = full.part("attention")
        assert fused.macs > 0, "the fused op carries the MACs of the parts it absorbed"


@pytest.mark.slow
def test_profiles_are_reported_compared_and_printed(profiled_bench, tmp_path, capsys):
    out, document, _ = profiled_bench
    results = out / "results.json"
    assert main(["report", str(results), "--out", str(tmp_path / "report"), "--baseline", "hvt_digits"]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Where the time goes" in page and "profile_onnxruntime-fp32_b1.png" in page
    assert (tmp_path / "report" / "profile_openvino-fp32_b1.png").stat().st_size > 0
    slower = json.loads(results.read_text())
    for row in slower["results"]:
        if row.get("layer_profile"):
            row["layer_profile"]["total_ms"] *= 2
            row["layer_profile"]["parts"][0]["time_ms"] *= 3
    (tmp_path / "new.json").write_text(json.dumps(slower))
    capsys.readouterr()
    main(["compare", str(results), str(tmp_path / "new.json")])
    text = capsys.readouterr().out
    assert "profile diff" in text and "hvt_digits onnxruntime fp32 b1: profiled" in text and "+200.0%" in text


def test_the_profile_command(profiled_bench, tmp_path, capsys):
    out, _, _ = profiled_bench
    artifact = out / "hvt_digits" / "openvino-fp32"
    assert main(["profile", str(artifact), "--runs", "3", "--warmup", "1", "--threads", "1",
                 "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    assert "time/MAC" in printed and "(outside nodes)" in printed and "blocks.0" in printed
    assert PROFILE.validate_json((tmp_path / "p.json").read_text()).nodes
    assert main(["profile", str(tmp_path / "nowhere")]) == 2
    assert main(["profile", str(artifact), "--runs", "0"]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err


def test_runners_that_cannot_profile_say_why():
    from runtimes.coreml_backend import CoreMLRunner, can_predict_here
    from runtimes.torch_backend import TorchRunner

    assert "torch.profiler" in TorchRunner(None, [], []).profiling_unavailable()
    if not can_predict_here():
        assert "macOS" in CoreMLRunner("model.mlpackage").profiling_unavailable()
