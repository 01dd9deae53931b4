"""Core ML for every 224 zoo model, checked without macOS: what the converted ML program is.

Each model is the zoo variant's own configuration at 224 x 224 (widths, heads, patch embedding, pooling
schedule, stage layout), with each stage cut to its first block: a full-size conversion took 47 s for
cvt_13 here (a shared machine), thirteen of them would not fit the suite, and what is checked (inputs,
outputs, enumerated shapes, precision, the ops attention and int8 weights lower to, conversion warnings) is
the same for every block of a stage. HVT keeps all of its pooling stages (one block before each).

Converted once per model (module fixture), enumerated batches (1, 4), iOS 18, fp16; int8 on one model
(tests/test_coreml_backend.py checks int8 at both deployment targets on a small HVT). Which ops a compute
plan would send off the Neural Engine needs `MLComputePlan`, macOS only: the test that reads it skips
elsewhere.
"""

from __future__ import annotations

import logging
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import stage_heads

import models
from runtimes import BuildOptions, ModelSource, TensorSpec, get_backend
from runtimes.coreml_backend import CoreMLOptions
from runtimes.coreml_convert import QUANTIZED_WEIGHT_OPS, describe_mlprogram

ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed: pip install -e .[coreml]")
torch = pytest.importorskip("torch", reason="torch builds the zoo models")

ZOO_224 = [info.name for info in models.list_models() if info.input_size == (3, 224, 224)]
INT8 = ["hvt_ti_1"]  # int8 quantizes after the same conversion: one model (the cheapest) shows the ops
BATCHES = (1, 4)
TARGET = "iOS18"
# Messages coremltools and torch.export print for every conversion here, none about the model: torch's
# deprecation of the pytree API coremltools 9 calls, coremltools' own deprecated registry lookup, and its
# notice that this torch is newer than the one it was tested with.
KNOWN_NOISE = ("isinstance(treespec, LeafSpec)", "_TORCH_OPS_REGISTRY.__contains__ is deprecated",
               "has not been tested with coremltools", "Torch version")


@dataclass
class Converted:
    folder: Path
    details: dict[str, Any]  # the build's details
    info: dict[str, Any]  # describe_mlprogram of the package
    model: Any
    messages: list[str]  # warnings raised and logged while converting


def _convert(name: str, folder: Path, precision: str = "fp16") -> Converted:
    torch.manual_seed(0)
    model = models.create_model(name, **stage_heads(name))
    source = ModelSource([TensorSpec("input", ("batch", 3, 224, 224))], ["logits"], module=model)
    options = BuildOptions(precision=precision, batch=BATCHES,
                           runtime=CoreMLOptions(minimum_deployment_target=TARGET, batch_shapes="enumerated"))
    with warnings.catch_warnings(record=True) as caught, _LogRecords("coremltools") as logged:
        warnings.simplefilter("always")
        result = get_backend("coreml").build(source, folder, options)
    # ResourceWarnings come from garbage collection mid-conversion (earlier MLModels' temporary packages).
    messages = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)] + logged.messages
    return Converted(folder, result.details, describe_mlprogram(folder / "model.mlpackage"), model, messages)


class _LogRecords(logging.Handler):
    """Warnings coremltools logs (it logs most of them rather than warning)."""

    def __init__(self, name: str):
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _LogRecords:
        self.level_before = self.logger.level
        self.logger.setLevel(logging.WARNING)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(name: str, precision: str = "fp16"):
        if (name, precision) not in cache:
            cache[name, precision] = _convert(name, tmp_path_factory.mktemp(f"{name}-{precision}"), precision)
        return cache[name, precision]

    return get


def test_every_224_model_is_listed():
    assert len(ZOO_224) == 13 and {"hvt_ti_1", "hvt_s_4", "deit_s", "cvt_21", "vit_resnas_medium"} <= set(ZOO_224)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_224)
def test_program_io_shapes_precision_and_attention(converted, name):
    done = converted(name)
    info, model = done.info, done.model
    (feature,) = info["inputs"]
    assert feature["name"] == "input" and feature["dtype"] == "float32" and feature["shape"] == (1, 3, 224, 224)
    assert feature["enumerated_shapes"] == [(b, 3, 224, 224) for b in BATCHES]
    (output,) = info["outputs"]  # its shape follows the enumerated input: the spec leaves it open
    assert output["name"] == "logits" and output["dtype"] == "float32"
    assert info["precision"] == "fp16" and info["opset"] == "CoreML8" and done.details["batches"] == list(BATCHES)
    # iOS 18: every attention became Core ML's fused op, none is left as matmul + softmax.
    attention = sum(isinstance(m, torch.nn.Module) and type(m).__name__.endswith("Attention")
                    for m in model.modules())
    assert info["ops"].get("scaled_dot_product_attention", 0) == attention > 0
    assert "softmax" not in info["ops"]
    noise = [m for m in done.messages if not any(k in m for k in KNOWN_NOISE)]
    assert noise == [], f"{name}: coremltools conversion warnings"


@pytest.mark.slow
@pytest.mark.parametrize("name", INT8)
def test_int8_weights_are_constexpr_ops(converted, name):
    done = converted(name, "int8")
    info = done.info
    quantized = sum(info["ops"].get(op, 0) for op in QUANTIZED_WEIGHT_OPS)
    # iOS 18 programs hold int8 weights in constexpr_blockwise_shift_scale, dequantized at load.
    assert info["ops"].get("constexpr_blockwise_shift_scale", 0) == quantized > 0
    assert info["precision"] == "fp16"
    assert [m for m in done.messages if not any(k in m for k in KNOWN_NOISE)] == []


@pytest.mark.skipif(platform.system() != "Darwin", reason="MLComputePlan (which device runs each op) needs macOS")
@pytest.mark.parametrize("name", ZOO_224)
def test_compute_plan_places_every_op(converted, name):
    """Prints the ops Core ML would run off the Neural Engine; fails if the plan leaves an op unplaced."""
    from coremltools.models.compute_plan import MLComputePlan

    compiled = ct.models.MLModel(str(converted(name).folder / "model.mlpackage"),
                                 compute_units=ct.ComputeUnit.ALL).get_compiled_model_path()
    plan = MLComputePlan.load_from_path(compiled, compute_units=ct.ComputeUnit.ALL)
    off, unplaced = set(), []
    for op in plan.model_structure.program.functions["main"].block.operations:
        if op.operator_name == "const":
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        if usage is None:
            unplaced.append(op.operator_name)
        elif type(usage.preferred_compute_device).__name__ != "MLNeuralEngineComputeDevice":
            off.add(op.operator_name)
    print(f"{name}: ops off the Neural Engine: {sorted(off)}")
    assert unplaced == []
