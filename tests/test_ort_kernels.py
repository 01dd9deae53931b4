"""ONNX Runtime kernels timed alone (runtimes/ort_kernels.py, `scripts/sgemm_ceiling.py --kernels`): every compute
node is found and timed, its MACs come from its real shapes (weights ORT prepacked included), and over the
zoo's three hierarchical families the kernels' MACs are the model's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import small_cvt, small_hvt, small_resnas
from onnx import TensorProto, helper, numpy_helper

from deploy.export.onnx_export import clean_up, export_onnx
from deploy.export.targets import TARGETS
from deploy.passes import run_passes
from models.complexity import count_macs
from runtimes.ort_kernels import COMPUTE_OPS, SourceConvs, isolated_kernels
from runtimes.ort_trace import TracedNode, TraceSettings

QUICK = TraceSettings(threads=1, runs=3, warmup=1)


def _hand_made(path: Path) -> Path:
    """x[1,8,16] @ W1[16,32] + b, Relu, @ W2[32,4]; and q[2,8,4] @ k[2,4,8] between two graph inputs."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
             helper.make_node("MatMul", ["q", "k"], ["s"], name="scores")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
              for n, s in (("x", [1, 8, 16]), ("q", [2, 8, 4]), ("k", [2, 4, 8]))]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "s")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path))
    return path


def test_each_compute_node_is_timed_alone_with_the_macs_of_its_shapes(tmp_path):
    report = isolated_kernels(_hand_made(tmp_path / "g.onnx"), QUICK, rounds=2)
    macs = {kernel.name: kernel.macs for kernel in report.kernels}
    # ORT may fuse fc1's bias into a Gemm/FusedMatMul of its own name; the products stay what they are.
    assert sorted(macs.values()) == sorted([8 * 16 * 32, 8 * 32 * 4, 2 * 8 * 4 * 8])
    assert all(kernel.op_type in COMPUTE_OPS for kernel in report.kernels)
    assert all(kernel.isolated_ms > 0 and kernel.in_model_ms > 0 for kernel in report.kernels)
    assert "Relu" in report.other_ms
    accounted = sum(k.in_model_ms for k in report.kernels) + sum(report.other_ms.values())
    assert accounted == pytest.approx(report.total_ms)
    shapes = {kernel.macs: kernel.shape for kernel in report.kernels}
    assert shapes[8 * 32 * 4] == "1x8x32 @ 32x4"  # the prepacked weight's shape, which ORT's trace leaves out
    assert shapes[2 * 8 * 4 * 8] == "2x8x4 @ 2x4x8"
    weights = {kernel.macs: kernel.weight_bytes for kernel in report.kernels}
    assert weights[8 * 32 * 4] == 32 * 4 * 4 and weights[2 * 8 * 4 * 8] == 0  # fp32 w2; two activations
    cold = {kernel.macs: kernel.cold_ms for kernel in report.kernels}
    assert cold[8 * 32 * 4] is not None and cold[8 * 32 * 4] > 0 and cold[2 * 8 * 4 * 8] is None


def test_a_convolution_padded_to_the_cpus_channel_block_counts_its_real_channels():
    """ORT's NCHWc pass pads channels to the vector block (16 on AVX-512, 8 on AVX2): a 24-channel 3x3 convolution
    runs with 32x32 weights on one CPU and 24x24 on the other. Either way it counts the source graph's 24x24."""
    weight = numpy_helper.from_array(np.zeros((24, 24, 3, 3), np.float32), "w")
    source = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight]))
    real = 14 * 14 * 24 * 24 * 9
    for block in (8, 16):
        channels = -(-24 // block) * block
        optimized = helper.make_node("Conv", ["x", "reorder"], ["y"], name="y_nchwc", domain="com.microsoft.nchwc",
                                     pads=[1, 1, 1, 1])
        shapes = [("float", (1, channels, 14, 14)), ("float", (channels, channels, 3, 3))]
        traced = TracedNode("y_nchwc", "Conv", 1.0, tuple(shapes[:1]), ((1, channels, 14, 14),))
        padded_count = 14 * 14 * channels * channels * 9
        assert SourceConvs.of(source).macs(optimized, shapes, traced, padded_count) == real
    other_kernel = helper.make_node("Conv", ["x", "w5"], ["y"], name="c", kernel_shape=[5, 5])
    shapes = [("float", (1, 24, 14, 14)), ("float", (24, 24, 5, 5))]
    assert SourceConvs.of(source).macs(other_kernel, shapes, TracedNode("c", "Conv", 1.0, (), ((1, 24, 14, 14),)),
                                       7) == 7, "no source convolution of that kernel: the count it was given"


@pytest.mark.slow
@pytest.mark.parametrize("family, build, shape", [("hvt", small_hvt, (3, 32, 32)), ("cvt", small_cvt, (3, 64, 64)),
                                                   ("resnas", small_resnas, (3, 28, 28))])
def test_the_kernels_macs_are_the_models(family, build, shape, tmp_path):
    """Fused attention (com.microsoft.Attention on HVT and ViT-ResNAS, MultiHeadAttention on CvT), NCHWc
    convolutions and MatMuls together count what FlopCounterMode counts on the PyTorch module."""
    model = build()
    graph, _ = run_passes(clean_up(export_onnx(model, shape, 20)), TARGETS["onnxruntime"].default_passes)
    onnx.save_model(graph, str(tmp_path / "model.onnx"))
    report = isolated_kernels(tmp_path / "model.onnx", QUICK, rounds=1, cold=False)
    fused = {kernel.op_type for kernel in report.kernels}
    assert ("MultiHeadAttention" if family == "cvt" else "Attention") in fused
    expected = count_macs(model, shape)
    assert sum(kernel.macs for kernel in report.kernels) == pytest.approx(expected, rel=0.02)


@pytest.mark.slow
def test_the_ceiling_script_prints_each_engines_kernels(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import sgemm_ceiling

    engine = _hand_made(tmp_path / "g.onnx")
    assert sgemm_ceiling.main(["--threads", "1", "--size", "256", "--runs", "3", "--kernels", str(engine)]) == 0
    out = capsys.readouterr().out
    assert "the same kernels alone" in out and "2x8x4 @ 2x4x8" in out and "rest of the graph: " in out
    assert "with weights from memory (cold)" in out


@pytest.mark.slow
def test_the_ceiling_script_times_engines_and_the_sgemm_in_the_same_rounds(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import sgemm_ceiling

    from deploy.export import ExportRequest, export

    artifacts = []
    for passes in ("default", "none"):  # two engines of one runtime: the second's ratio is to the first
        export(ExportRequest("hvt_digits", "onnxruntime", "fp32", out=tmp_path / passes, batch=(1,), passes=passes))
        artifacts.append(str(tmp_path / passes / "hvt_digits" / "onnxruntime-fp32"))
    argv = ["--threads", "1", "--size", "128", "--interleave", "2", "--interleave-runs", "2", *artifacts]
    assert sgemm_ceiling.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  hvt_digits")]
    assert len(rows) == 2 and rows[0][1] == "onnxruntime" and rows[0][-1] == "1.000"
    assert float(rows[1][2]) > 0 and rows[1][-2].endswith("%")
