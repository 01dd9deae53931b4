"""`debug-precision`: per-layer error against fp32, the layer it names, and the module it came from."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.cli import main
from deploy.diagnose.run import DebugRequest, build_graphs
from deploy.export.layer_error import compare_graphs, sqnr_db
from deploy.passes import scopes


@pytest.fixture(scope="module")
def digits_int8():
    return build_graphs(DebugRequest("hvt_digits", "onnxruntime", "int8", samples=8))


def _weight_of(model: onnx.ModelProto, module: str) -> str:
    """The int8 weight a MatMul of `module` reads through its DequantizeLinear."""
    initializers = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type == "MatMul" and scopes.module_path(node) == module:
            dq = producer.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in initializers:
                return dq.input[0]
    raise AssertionError(f"no quantized MatMul weight in {module}")


@pytest.mark.slow
def test_a_perturbed_layer_is_named_with_its_module(digits_int8):
    broken = onnx.ModelProto()
    broken.CopyFrom(digits_int8.low)
    name = _weight_of(broken, "blocks.1.mlp.fc1")
    tensor = next(t for t in broken.graph.initializer if t.name == name)
    weight = numpy_helper.to_array(tensor)
    flipped = np.where(np.random.default_rng(0).random(weight.shape) < 0.5, -weight, weight).astype(np.int8)
    tensor.CopyFrom(numpy_helper.from_array(flipped, name))
    report = compare_graphs(digits_int8.fp32, broken, digits_int8.feeds)
    worst = report.worst(1)[0]
    assert worst.module == "blocks.1.mlp.fc1" and worst.op_type == "MatMul", worst
    assert report.first_jump.module == "blocks.1.mlp.fc1", report.first_jump
    assert worst.sqnr_db < 10 and worst.drop_db > 20
    healthy = compare_graphs(digits_int8.fp32, digits_int8.low, digits_int8.feeds)
    assert healthy.output().sqnr_db > 30 > report.output().sqnr_db, "the broken layer wrecks the logits"


@pytest.mark.slow
def test_every_compared_layer_knows_its_module(digits_int8):
    report = compare_graphs(digits_int8.fp32, digits_int8.low, digits_int8.feeds)
    assert report.compared > 50 and report.samples == 8
    assert all(layer.module is not None for layer in report.layers)
    assert report.output().cosine > 0.999


def test_sqnr():
    x = np.ones(100)
    assert math.isinf(sqnr_db(x, x))
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0)


@pytest.mark.slow
def test_the_command_prints_the_layers(capsys):
    assert main(["debug-precision", "hvt_digits", "--precision", "fp16", "--samples", "4", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "hvt_digits on onnxruntime fp16 against fp32, on 4 digits images" in out
    assert "the 3 layers adding the most error:" in out and "blocks." in out


def test_a_runtime_that_converts_precision_itself_is_one_line(capsys):
    assert main(["debug-precision", "hvt_digits", "--target", "openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the runtime converts precision itself" in err[0]
