"""The int8 Q/DQ pass: TensorRT's explicit-quantization rules, calibration methods, scopes, ORT int8 end to end."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from helpers import small_cvt, small_hvt
from onnx import numpy_helper

import models
from deploy.errors import DeployError
from deploy.export import ExportRequest, export
from deploy.export.onnx_export import clean_up, export_onnx
from deploy.export.targets import get_target
from deploy.passes import run_passes, scopes
from deploy.passes.quantize import MOVES, Calibration, head_nodes, quantize_qdq

FLOAT_ISLANDS = {"LayerNormalization", "Softmax", "Gelu", "MaxPool", "AveragePool", "ReduceMean"}


def _calibration(shape, n=16, method="minmax") -> Calibration:
    rng = np.random.default_rng(0)
    return Calibration([{"input": rng.standard_normal((1, *shape)).astype(np.float32)} for _ in range(n)], method)


@pytest.fixture(scope="module", params=["hvt", "cvt"])
def int8_graph(request):
    """(float graph, int8 graph) through the int8 default passes plus int8-qdq (TensorRT's Q/DQ rules)."""
    model = small_hvt() if request.param == "hvt" else small_cvt()
    shape = (3, 32, 32) if request.param == "hvt" else (3, 64, 64)
    clean = clean_up(export_onnx(model, shape, 20))
    spec = get_target("tensorrt")
    names = [*spec.defaults_for("int8"), *spec.precision_passes["int8"]]
    floating, _ = run_passes(clean, names[:-1])
    quantized, records = run_passes(clean, names, _calibration(shape))
    assert records[-1].name == "int8-qdq" and records[-1].changed > 0
    return floating, quantized, shape


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            out[name].append(node)
    return out


@pytest.mark.slow
def test_the_qdq_graph_meets_tensorrts_explicit_quantization_rules(int8_graph):
    floating, quantized, _ = int8_graph
    initializers = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    consumers = _consumers(quantized)
    opset = next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13, "per-channel DequantizeLinear needs opset 13"
    dq_nodes = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_nodes
    for node in quantized.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: symmetric int8, zero point 0"
        if node.op_type == "QuantizeLinear":
            assert node.input[0] not in initializers, f"{node.name}: a constant is quantized at run time"
    for node in dq_nodes:
        for user in consumers[node.output[0]]:
            # Shape reads only the dims (CvT's batch size): not a computation on the quantized values.
            assert user.op_type in ("MatMul", "Gemm", "Conv", "Shape"), f"{user.op_type} reads int8: must stay float"
    for node in quantized.graph.node:
        if node.op_type in FLOAT_ISLANDS:
            producers = {p.op_type for p in quantized.graph.node for o in p.output if o in node.input}
            assert "DequantizeLinear" not in producers, f"Q/DQ around {node.op_type}"


@pytest.mark.slow
def test_weights_are_int8_per_channel_on_the_output_axis(int8_graph):
    _, quantized, shape = int8_graph
    initializers = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    consumers = _consumers(quantized)
    checked = collections.Counter()
    for node in quantized.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            continue
        weight, scale = initializers[node.input[0]], initializers[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        (user,) = consumers[node.output[0]]
        assert weight.dtype == np.int8
        expected_axis = 1 if user.op_type == "MatMul" else 0
        assert axis == expected_axis and scale.shape == (weight.shape[expected_axis],), (user.op_type, axis)
        checked[user.op_type] += 1
    assert checked["MatMul"] > 0


@pytest.mark.slow
def test_the_classifier_head_and_the_pooling_stay_float(int8_graph):
    floating, quantized, _ = int8_graph
    heads = set(head_nodes(floating))
    assert heads
    dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in quantized.graph.node:
        if node.name in heads:
            assert not set(node.input) & dequantized, "the head reads float"


def test_the_pass_keeps_every_nodes_module_scope(int8_graph):
    _, quantized, shape = int8_graph
    bare = [n.op_type for n in quantized.graph.node if scopes.SCOPES not in scopes.metadata(n)]
    assert not bare, f"nodes without a module scope: {collections.Counter(bare)}"
    dq_scopes = {scopes.module_path(n) for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert any(path and ".attn" in path for path in dq_scopes), dq_scopes


def test_a_qdq_graph_is_never_quantized_again(int8_graph):
    _, quantized, shape = int8_graph
    again, record = quantize_qdq(quantized, _calibration(shape))
    assert again is quantized and record.changed == 0


@pytest.mark.slow
def test_each_calibration_method_sets_the_activation_scales():
    clean = clean_up(export_onnx(small_hvt(), (3, 32, 32), 20))
    feeds = _calibration((3, 32, 32)).feeds

    def activation_scales(method, percentile=99.999):
        proto, _ = run_passes(clean, ["int8-qdq"], Calibration(feeds, method, percentile))
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        return np.array([float(inits[n.input[1]]) for n in proto.graph.node if n.op_type == "QuantizeLinear"])

    minmax, entropy, percentile = activation_scales("minmax"), activation_scales("entropy"), activation_scales(
        "percentile", 99.0)
    assert len(minmax) == len(entropy) == len(percentile) and (entropy > 0).all()
    # The KL threshold never exceeds the observed range; the 99th percentile cuts the tails below it.
    assert (entropy <= minmax * 1.0001).all()
    assert (percentile <= minmax * 1.0001).all() and (percentile < minmax * 0.9).any()


@pytest.mark.slow
def test_bad_calibration_is_one_clear_error():
    with pytest.raises(DeployError, match="--calib-method 'kl'"):
        Calibration([{"input": np.zeros((1, 3, 8, 8), np.float32)}], "kl")
    with pytest.raises(DeployError, match="needs calibration samples"):
        run_passes(clean_up(export_onnx(small_hvt(), (3, 32, 32), 20)), ["int8-qdq"])


@pytest.mark.slow
def test_onnxruntime_int8_export_is_gated_on_the_digits(tmp_path):
    result = export(ExportRequest("hvt_digits", "onnxruntime", "int8", out=tmp_path, batch=(1,)))
    parity = result.manifest.parity
    assert result.manifest.onnx.passes[-1].name == "int8-qdq-cpu"
    assert "attention-ort-packed" not in [p.name for p in result.manifest.onnx.passes]
    assert parity.real_data.images == 450 and parity.real_data.agreement >= 0.99 and parity.passed
    assert parity.gate == "450 digits images"
    assert result.manifest.calibration["source"] == "digits (training split)"


@pytest.mark.slow
def test_random_init_int8_is_recorded_not_gated(tmp_path, capsys):
    from deploy.cli import main

    assert main(["export", "hvt_ti_1", "--int8", "--batch", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: int8 on seeded inputs is recorded, not gated" in out


@pytest.mark.slow
def test_a_real_data_failure_points_at_the_debugger(tmp_path, monkeypatch):
    from deploy.export.goal import AccuracyGoal

    monkeypatch.setattr(AccuracyGoal, "miss", lambda self, *figures: "forced to miss")  # every engine misses
    with pytest.raises(DeployError, match="debug-precision hvt_digits --target onnxruntime --precision fp16"):
        export(ExportRequest("hvt_digits", "onnxruntime", "fp16", out=tmp_path, batch=(1,)))
    assert models.get_model_info("hvt_digits").reference_dataset == "digits"


# ---------------------------------------------------------------- int8-qdq-cpu: ONNX Runtime's CPU recipe


@pytest.fixture(scope="module")
def cpu_graphs():
    """(float graph, int8-qdq-cpu graph) of the small CvT: depthwise q/k/v convolutions and attention."""
    clean = clean_up(export_onnx(small_cvt(), (3, 64, 64), 20))
    spec = get_target("onnxruntime")
    assert spec.precision_passes["int8"] == ("int8-qdq-cpu",)
    floating, _ = run_passes(clean, spec.defaults_for("int8"))
    quantized, records = run_passes(clean, [*spec.defaults_for("int8"), "int8-qdq-cpu"], _calibration((3, 64, 64)))
    assert records[-1].name == "int8-qdq-cpu" and records[-1].changed > 0
    return floating, quantized


def _ort_graph(model: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU EP runs after its optimizations (what it fused)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


@pytest.mark.slow
def test_cpu_recipe_runs_every_quantized_conv_as_an_int8_kernel(cpu_graphs, tmp_path):
    """Depthwise convolutions included: u8 activations and quantized outputs and biases let ORT fuse QLinearConv."""
    _, quantized = cpu_graphs
    initializers = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    activation_points = [initializers[n.input[2]] for n in quantized.graph.node
                         if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]
    assert activation_points and all(p.dtype == np.uint8 for p in activation_points)
    depthwise = [n for n in quantized.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert depthwise
    optimized = collections.Counter(n.op_type for n in _ort_graph(quantized, tmp_path).graph.node)
    assert optimized["QLinearConv"] >= len(depthwise) and optimized["Conv"] == 0, optimized


@pytest.mark.slow
def test_cpu_recipe_quantizes_a_tensor_once_and_keeps_no_round_trip_to_float_layers(cpu_graphs):
    _, quantized = cpu_graphs
    nodes = quantized.graph.node
    producer = {out: node for node in nodes for out in node.output}
    roots = collections.Counter()
    for node in nodes:
        if node.op_type == "QuantizeLinear":
            tensor = node.input[0]
            while tensor in producer and producer[tensor].op_type in MOVES:
                tensor = producer[tensor].input[0]
            roots[tensor] += 1
    assert roots and max(roots.values()) == 1, "one QuantizeLinear per tensor, its int8 shared through reshapes"
    users = _consumers(quantized)
    for node in nodes:  # a MatMul's output is quantized only where a quantized layer reads it (through moves)
        if node.op_type == "QuantizeLinear" and producer.get(node.input[0]) is not None \
                and producer[node.input[0]].op_type == "MatMul":
            readers = [u for dq in users[node.output[0]] for u in users[dq.output[0]]]
            assert any(u.op_type in (*MOVES, "MatMul", "Conv", "QuantizeLinear") for u in readers), readers


@pytest.mark.slow
def test_cpu_recipe_leaves_no_unread_initializer(cpu_graphs):
    """The dropped round trips' scales and zero points go too: ONNX Runtime warns once per unread one at load."""
    _, quantized = cpu_graphs
    read = {tensor for node in quantized.graph.node for tensor in node.input}
    assert [t.name for t in quantized.graph.initializer if t.name not in read] == []


def test_cpu_recipe_keeps_the_numerics(cpu_graphs):
    import onnxruntime as ort

    floating, quantized = cpu_graphs
    x = np.random.default_rng(3).standard_normal((4, 3, 64, 64)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (floating, quantized)]
    outputs = [session.run(None, {"input": x})[0] for session in sessions]
    cosine = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(*outputs, strict=True)]
    assert min(cosine) > 0.99, cosine
