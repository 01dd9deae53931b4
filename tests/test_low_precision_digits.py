"""The real-data gate over the four digits references: every low-precision engine the CPU runtimes build here
agrees with PyTorch fp32 on >= 99 % of the 450 held-out digits (the export stage refuses one that does not),
int8 calibrated on the training split. ExecuTorch's int8 is in tests/test_executorch_zoo.py."""

from __future__ import annotations

import importlib.util

import pytest

import models
from deploy.export import ExportRequest, export

REFERENCES = [info.name for info in models.list_models() if info.reference_dataset == "digits"]
CELLS = [("onnxruntime", "int8"), ("onnxruntime", "fp16"), pytest.param("openvino", "int8", marks=pytest.mark.nncf),
         ("openvino", "fp16"), ("openvino", "bf16")]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "precision"), CELLS)
@pytest.mark.parametrize("name", REFERENCES)
def test_low_precision_engine_agrees_with_pytorch_on_the_held_out_digits(tmp_path, graphs, name, target, precision):
    if target == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("the openvino extra is not installed: pip install -e .[openvino]")
    result = export(ExportRequest(name, target, precision, out=tmp_path, batch=(1,)), onnx_cache=graphs(name))
    real = result.manifest.parity.real_data
    assert result.manifest.parity.passed and result.manifest.status == "ok"
    assert real is not None and real.dataset == "digits" and real.images == 450
    assert real.agreement >= 0.99 and real.passed, real
    assert real.top1 >= real.reference_top1 - 0.01, real
    if precision == "int8":
        assert result.manifest.calibration["source"] == "digits (training split)"
