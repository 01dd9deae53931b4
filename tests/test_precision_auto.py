"""`--precision auto` on the digits references: the goal, the candidates each runtime builds and gates, mixed
precision that names the sensitive layer, the choice rule, the manifest's table, bench and report, bad input.

Timing budgets are tiny (one round): these tests check what is built, gated, recorded and chosen, never which
candidate is faster; where the choice itself is under test the latencies are given, not measured.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from helpers import error_line, small_hvt

from deploy.cli import main
from deploy.errors import DeployError
from deploy.export import ExportRequest, export, load_artifact
from deploy.export.autotune import AutotuneSettings
from deploy.export.goal import DEFAULT_GOAL, AccuracyGoal, parse_share
from deploy.export.precision_auto import search as search_module
from deploy.export.precision_auto.candidates import base_recipes
from deploy.export.precision_auto.placement import THRESHOLD, decide, layer_kind
from deploy.export.precision_auto.record import (
    CandidateAccuracy,
    PrecisionCandidate,
    pareto_front,
)
from deploy.timing import RoundsResult
from models import ModelRequest, load_model

TINY = AutotuneSettings(rounds=1, runs=2, warmup_s=0.0)
REFERENCES = ["hvt_digits", "deit_digits", "cvt_digits", "resnas_digits"]
SENSITIVE = "blocks.1.attn.qkv"


def _auto(model, target="onnxruntime", out=None, cache=None, **kwargs):
    return export(ExportRequest(model, target, "auto", out=out, batch=(1,), autotune=TINY, **kwargs), onnx_cache=cache)


def _one_error_line(capsys) -> str:
    return error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- the goal


def test_goal_reads_percentages_and_fractions_and_refuses_the_rest():
    assert parse_share("1%", "--max-drop") == pytest.approx(0.01)
    assert parse_share("0.99", "--min-agreement") == pytest.approx(0.99)
    assert parse_share("99.5%", "--min-agreement") == pytest.approx(0.995)
    with pytest.raises(DeployError, match="a bare number is a fraction"):
        parse_share("99", "--min-agreement")
    with pytest.raises(DeployError, match="give a percentage"):
        parse_share("lots", "--max-drop")
    with pytest.raises(DeployError, match="out of range"):
        AccuracyGoal.of(max_drop="100%")
    with pytest.raises(DeployError, match="give one of them"):
        AccuracyGoal.of(max_drop="1%", min_agreement="99%")
    assert AccuracyGoal.of() is DEFAULT_GOAL


def test_goal_judges_drop_and_agreement_and_counts_the_images_it_needs():
    drop = AccuracyGoal(max_drop=0.01)
    assert drop.miss(top1=0.905, reference_top1=0.91, agreement=0.5) is None  # 0.5% drop: agreement is no part
    assert "below PyTorch's" in drop.miss(top1=0.89, reference_top1=0.91, agreement=1.0)
    agree = AccuracyGoal(min_agreement=0.99)
    assert agree.miss(0.5, 0.9, agreement=0.99) is None
    assert "agreement" in agree.miss(0.9, 0.9, agreement=0.985)
    assert drop.images_needed() == 100 and AccuracyGoal(min_agreement=0.999).images_needed() == 1000
    assert AccuracyGoal(min_agreement=1.0).images_needed() == 1
    with pytest.raises(DeployError, match="has 450 labelled image.*needs at least 1000"):
        AccuracyGoal(max_drop=0.001).check_images(450, "dataset 'digits'")


# ---------------------------------------------------------------- pieces


def test_each_runtime_starts_from_its_own_candidates():
    def labels(target, precisions, labelled=True):
        return [r.label for r in base_recipes(target, precisions, labelled)]

    assert labels("onnxruntime", ("fp32", "fp16", "int8")) == [
        "fp32", "fp16", "int8 minmax", "int8 entropy", "int8 percentile"]
    assert labels("tensorrt", ("fp32", "fp16", "int8")) == labels("onnxruntime", ("fp32", "fp16", "int8"))
    assert labels("openvino", ("fp32", "bf16", "fp16", "int8")) == [
        "fp32", "fp16", "bf16", "int8 nncf", "int8 nncf+smoothquant", "int8 nncf accuracy-control"]
    assert "int8 nncf accuracy-control" not in labels("openvino", ("fp32", "int8"), labelled=False)
    assert labels("executorch", ("fp32", "fp16", "int8")) == ["fp32", "fp16", "int8"]


def _candidate(label, ms, agreement, status="passed"):
    from deploy.timing import CandidateLatency

    latency = CandidateLatency(ms, ms, ms, ms, ms, 0.0, ms, ms, score=ms, round_medians=[ms])
    return PrecisionCandidate(label, "int8", "", status, "", accuracy=CandidateAccuracy("digits", 450, 0.9, 0.9,
                                                                                         agreement),
                              latency_ms=latency)


def test_pareto_front_keeps_what_nothing_beats_on_both_axes():
    candidates = [_candidate("fp32", 1.0, 1.0), _candidate("fp16", 1.2, 1.0), _candidate("int8", 0.5, 0.97),
                  _candidate("mixed", 0.6, 0.995), _candidate("worse", 0.7, 0.99)]
    assert pareto_front(candidates, by_drop=False) == {"fp32", "int8", "mixed"}


def test_placement_keeps_int8_only_where_it_is_threshold_faster():
    from onnx import TensorProto, helper

    def matmul(name, module):
        node = helper.make_node("MatMul", [f"{name}_x", f"{name}_w"], [f"{name}_y"], name=name)
        helper.set_metadata_props(node, {"pkg.torch.onnx.name_scopes": repr([module, "linear"])})
        return node

    nodes = []
    for i in range(2):
        for layer in ("fc1", "fc2"):
            name = f"b{i}_{layer}"
            nodes += [helper.make_node("DequantizeLinear", [f"{name}_q", "s"], [f"{name}_x"], name=f"{name}_dq"),
                      matmul(name, f"blocks.{i}.mlp.{layer}")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])], [])
    model = helper.make_model(graph)
    float_ms = {f"b{i}_{layer}": 1.0 for i in range(2) for layer in ("fc1", "fc2")}
    int8_ms = {"b0_fc1": 0.5, "b1_fc1": 0.5, "b0_fc2": 0.9, "b1_fc2": 0.9, "b0_fc2_dq": 0.1, "b1_fc2_dq": 0.1}
    placement = decide(model, int8_ms, float_ms, runs=5)
    kept = {group.pattern: group.kept for group in placement.record.groups}
    assert kept == {"blocks.*.mlp.fc1": True, "blocks.*.mlp.fc2": False}  # 2.0 / 2.0 is not >= 1.02
    assert placement.floating == ("blocks.0.mlp.fc2", "blocks.1.mlp.fc2")
    assert placement.record.threshold == THRESHOLD == 1.02 and "ModelOpt" in placement.record.rule
    assert layer_kind("stage1.blocks.12.attn.qkv") == "stage1.blocks.*.attn.qkv"


# ---------------------------------------------------------------- the digits references, end to end


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCES)
def test_onnxruntime_auto_publishes_a_measured_candidate_on_each_digits_reference(tmp_path, graphs, name):
    result = _auto(name, out=tmp_path, cache=graphs(name), auto_budget=3)
    manifest, record = result.manifest, result.manifest.precision_auto
    assert result.artifact_dir.name == "onnxruntime-auto" and manifest.status == "ok"
    assert record.accuracy_measured and record.dataset == "digits" and record.images == 450
    assert [c.label for c in record.candidates][:3] == ["fp32", "fp16", "int8 minmax"]
    assert record.builds == 3 and {c.status for c in record.candidates[3:]} == {"skipped"}
    chosen = record.chosen()
    assert manifest.precision == chosen.precision == record.precision and chosen.label == record.winner
    for candidate in record.candidates[:3]:  # every built candidate: accuracy on the 450 images, a latency
        assert candidate.accuracy.images == 450 and candidate.latency_ms.score > 0, candidate
        assert candidate.status in ("chosen", "passed", "failed") and candidate.reason
    assert chosen.pareto or any(c.pareto and c.latency_ms.score <= chosen.latency_ms.score * 1.02
                                for c in record.candidates if c.latency_ms)
    runner, loaded = load_artifact(result.artifact_dir)
    assert loaded.precision == chosen.precision  # the artifact serves the precision it published
    on_disk = json.loads((result.artifact_dir / "manifest.json").read_text())
    assert on_disk["precision_auto"]["winner"] == record.winner


def _timed_as(monkeypatch, latencies: dict[str, float]) -> None:
    """Every candidate's latency given (by label prefix) instead of measured: the choice rule under test."""
    def rounds(runners, feeds, settings, count, warm_once=False):
        ms = {label: next(v for k, v in latencies.items() if label.startswith(k)) for label in runners}
        return RoundsResult({k: [v] * 3 for k, v in ms.items()}, {k: [v] for k, v in ms.items()})

    monkeypatch.setattr(search_module, "interleaved_rounds", rounds)


@pytest.mark.slow
def test_auto_does_not_choose_int8_slower_than_fp32(tmp_path, monkeypatch, capsys):
    _timed_as(monkeypatch, {"fp32": 0.29, "fp16": 0.50, "int8": 0.47})
    assert main(["export", "hvt_digits", "--precision", "auto", "--auto-budget", "3", "--batch", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "hvt_digits" / "onnxruntime-auto" / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["precision_auto"]["winner"] == "fp32"
    assert "nothing faster than fp32 meets the goal: fp32 published" in out
    assert "int8 minmax" in out and "Pareto front" in out


@pytest.mark.slow
def test_auto_chooses_int8_only_beyond_the_tie_margin(tmp_path, graphs, monkeypatch):
    def auto(out):  # both exports share one clean export and its int8 graphs
        return _auto("hvt_digits", out=out, cache=graphs("hvt_digits"), auto_budget=3).manifest.precision_auto

    _timed_as(monkeypatch, {"fp32": 1.0, "fp16": 2.0, "int8": 0.995})  # 0.5% faster: noise, fp32 is simpler
    record = auto(tmp_path / "a")
    assert record.winner == "fp32" and "within the margin" in record.reason
    _timed_as(monkeypatch, {"fp32": 1.0, "fp16": 2.0, "int8": 0.6})
    record = auto(tmp_path / "b")
    assert record.winner == "int8 minmax" and "0.60x fp32's" in record.reason


def _sensitive_deit():
    """deit_digits with one layer made sensitive to int8, the function unchanged: one channel of block 1's first
    LayerNorm scaled 1000x and the next layer (its qkv projection) compensating, so that qkv's input has one
    outlier channel that per-tensor int8 activations cannot hold next to the others."""
    loaded = load_model(ModelRequest(model="deit_digits"))
    images = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        before = loaded.module(images)
    block = loaded.module.blocks[1]
    with torch.no_grad():
        block.norm1.weight[5] *= 1000
        block.norm1.bias[5] *= 1000
        block.attn.qkv.weight[:, 5] /= 1000
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(images), before, rtol=1e-3, atol=1e-3)
    return loaded


@pytest.mark.slow
def test_only_mixed_precision_passes_and_auto_names_the_sensitive_layer(tmp_path):
    record = _auto(_sensitive_deit(), out=tmp_path, auto_budget=8).manifest.precision_auto
    by_label = {c.label: c for c in record.candidates}
    full = [c for c in record.candidates if c.precision == "int8" and not c.float_layers]
    assert full and all(c.status == "failed" for c in full), [(c.label, c.reason) for c in full]
    assert record.ranking[0].module == SENSITIVE
    # Mixed precision starts from the full int8 candidate that came closest (agreement + top-1): which calibration
    # that is varies with the quantizer's rounding (percentile edged out minmax by one image of 450 here).
    closest = max(full, key=lambda c: c.accuracy.agreement + c.accuracy.top1)
    mixed = by_label[f"{closest.label}, 1 layer float"]  # the noisiest layer alone back in float is enough
    assert mixed.float_layers == [SENSITIVE] and mixed.status in ("chosen", "passed"), mixed
    assert mixed.accuracy.agreement >= 0.99 and all(c.accuracy.agreement < 0.99 for c in full)
    if record.precision == "int8":
        assert SENSITIVE in record.chosen().float_layers


@pytest.mark.slow
def test_without_labelled_images_auto_falls_back_to_seeded_parity_and_says_so(tmp_path, capsys):
    from deploy.cli.commands import format_auto

    request = ModelRequest(module=small_hvt(), input_size=(3, 32, 32), name="small")
    result = export(ExportRequest(request, "onnxruntime", "auto", out=tmp_path, batch=(1,), autotune=TINY,
                                  auto_budget=3))
    record = result.manifest.precision_auto
    assert not record.accuracy_measured and record.dataset is None
    assert "accuracy not measured" in record.goal
    assert all(c.accuracy is None and c.seeded is not None for c in record.candidates if c.status != "skipped")
    assert "accuracy was NOT measured" in format_auto(record)


@pytest.mark.slow
@pytest.mark.nncf
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed")
def test_openvino_auto_publishes_a_candidate(tmp_path, graphs):
    result = _auto("hvt_digits", "openvino", out=tmp_path, cache=graphs("hvt_digits"), auto_budget=4)
    record = result.manifest.precision_auto
    assert [c.label for c in record.candidates][:4] == ["fp32", "fp16", "bf16", "int8 nncf"]
    assert all(c.accuracy is not None and c.latency_ms is not None for c in record.candidates[:4])
    assert record.chosen().precision in ("fp32", "fp16", "bf16", "int8")


@pytest.mark.slow
@pytest.mark.nncf
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed")
def test_openvino_int8_leaves_the_ignored_layers_in_float(tmp_path):
    """Every quantizable node in NNCF's ignored scope: nothing is quantized, so the engine matches fp32."""
    import onnx

    from deploy.export.onnx_export import clean_up, export_onnx
    from deploy.passes.quantize import QUANTIZED_OPS
    from runtimes import BuildOptions, FloatLayers, ModelSource, TensorSpec, get_backend

    model = small_hvt()
    path = tmp_path / "model.onnx"
    onnx.save(clean_up(export_onnx(model, (3, 32, 32), 20)), str(path))
    nodes = tuple(n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTIZED_OPS)
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    backend, spec = get_backend("openvino"), TensorSpec("input", ("batch", 3, 32, 32))
    options = BuildOptions(precision="int8", calibration=feeds, keep_float=FloatLayers((), nodes))
    build = backend.build(ModelSource([spec], ["logits"], onnx_path=path), tmp_path, options)
    assert build.details["int8"]["float_nodes"] == list(nodes)
    with backend.load(tmp_path, build.files[0], options, [spec], ["logits"]) as runner:
        got = runner.infer(feeds[0])["logits"]
    with torch.inference_mode():
        expected = model(torch.from_numpy(feeds[0]["input"])).numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="the executorch extra is not installed")
def test_executorch_int8_leaves_the_excluded_modules_in_float():
    """The XNNPACK quantizer's filter: the excluded linear reads its float weight, the others a dequantized one."""
    from runtimes import TensorSpec
    from runtimes.executorch_lowering import LoweringJob, quantize_int8

    model = small_hvt()
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    job = LoweringJob(model, [TensorSpec("input", ("batch", 3, 32, 32))], "int8", {"forward": 1}, False, feeds,
                      keep_float=("blocks.0.attn.qkv",))
    converted, details = quantize_int8(job)
    assert details["quantization"]["float_modules"] == ["blocks.0.attn.qkv"]

    def weight_is_dequantized(module: str) -> bool:
        node = next(n for n in converted.graph.nodes if n.op == "call_function" and "linear" in str(n.target)
                    and list(n.meta["nn_module_stack"].values())[-1][0] == module)
        return "dequantize" in str(getattr(node.args[1], "target", ""))

    assert not weight_is_dequantized("blocks.0.attn.qkv")
    assert weight_is_dequantized("blocks.1.attn.qkv") and weight_is_dequantized("blocks.0.attn.proj")


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="the executorch extra is not installed")
def test_executorch_auto_publishes_within_its_budget(tmp_path):
    record = _auto("deit_digits", "executorch", out=tmp_path, auto_budget=1).manifest.precision_auto
    assert record.winner == "fp32" and record.builds == 1
    assert [c.status for c in record.candidates] == ["chosen", "skipped", "skipped"]
    assert record.candidates[1].reason == "not built: --auto-budget 1 spent"


# ---------------------------------------------------------------- bench, report, TensorRT, bad input


@pytest.mark.slow
def test_bench_times_auto_beside_fixed_precisions_and_the_report_draws_it(tmp_path, capsys):
    results = tmp_path / "r.json"
    assert main(["bench", "hvt_digits", "--target", "onnxruntime", "--precision", "fp32,auto", "--auto-budget", "2",
                 "--runs", "3", "--warmup", "0", "--no-progress", "--out", str(tmp_path),
                 "--json", str(results)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(results.read_text())["results"]
    assert [r["precision"] for r in rows] == ["fp32", "auto"]
    auto = rows[1]["auto"]
    assert auto["winner"] in ("fp32", "fp16") and len(auto["candidates"]) >= 2
    assert f"auto>{auto['precision']}" in out and "hvt_digits onnxruntime auto: published" in out
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "precision_auto_0.png" in page and "--precision auto</h2>" in page
    assert (tmp_path / "report" / "precision_auto_0.png").stat().st_size > 10_000


def test_tensorrt_candidates_reach_the_adapters_routes():
    """No GPU here: TensorRT's auto candidates are the graphs its strongly typed fp16 and Q/DQ int8 routes take."""
    from runtimes.tensorrt.plan import GraphTypes, choose_route

    for recipe in base_recipes("tensorrt", ("fp32", "fp16", "int8"), labelled=True):
        graph = GraphTypes(float16=recipe.precision == "fp16", qdq=recipe.precision == "int8")
        route = choose_route((11, 0, 0), recipe.precision, graph)
        assert route.name == "strong", recipe
    mixed = base_recipes("tensorrt", ("int8",), True)[0].with_float(("blocks.0.attn.qkv",))
    assert choose_route((10, 13, 0), mixed.precision, GraphTypes(False, True)).name == "strong"


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-drop", "150%"], "--max-drop 150% is out of range"),
    (["--max-drop", "1%", "--min-agreement", "99%"], "are two goals: give one of them"),
    (["--int8"], "--precision auto searches the precisions itself"),
    (["--auto-budget", "0"], "--auto-budget 0: --precision auto needs at least 1 build"),
    (["--dataset", "digits", "--max-drop", "0.1%"], "has 450 labelled image(s); measuring top-1 drop <= 0.1% against "
                                                     "PyTorch fp32 needs at least 1000"),
])
def test_bad_auto_input_is_one_error_line(tmp_path, capsys, argv, message):
    code = main(["export", "hvt_digits", "--precision", "auto", *argv, "--out", str(tmp_path)])
    assert code == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "hvt_digits" / "onnxruntime-auto").exists()


def test_a_folder_with_too_few_images_says_how_many_the_goal_needs(tmp_path, capsys):
    from PIL import Image

    for label in ("0", "1"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), color=40 * i).save(tmp_path / "set" / label / f"{i}.png")
    assert main(["export", "hvt_digits", "--precision", "auto", "--dataset", str(tmp_path / "set"),
                 "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "has 10 labelled image(s)" in line and "needs at least 100" in line, line


def test_goal_flags_without_auto_and_tensorrt_without_a_gpu_are_one_line(tmp_path, capsys):
    assert main(["export", "hvt_digits", "--int8", "--max-drop", "1%", "--out", str(tmp_path)]) == 2
    assert "set the goal of --precision auto" in _one_error_line(capsys)
    assert main(["bench", "hvt_digits", "--precision", "int8", "--auto-budget", "3", "--out", str(tmp_path)]) == 2
    assert "--auto-budget caps the builds of --precision auto" in _one_error_line(capsys)
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["export", "hvt_digits", "--target", "tensorrt", "--precision", "auto",
                     "--out", str(tmp_path)]) == 2
        assert "tensorrt is not usable here" in _one_error_line(capsys)
