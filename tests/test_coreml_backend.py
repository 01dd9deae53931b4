"""Core ML adapter: convert a small HVT, inspect the ML program here; predict only on macOS."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from helpers import small_hvt

from runtimes import (
    BuildOptions,
    EngineLoadError,
    ModelSource,
    RuntimeAdapterError,
    RuntimeUnavailableError,
    TensorSpec,
    get_backend,
)
from runtimes.coreml_backend import RUN_REASON, CoreMLOptions, static_batch
from runtimes.coreml_convert import describe_mlprogram

ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed: pip install -e .[coreml]")
torch = pytest.importorskip("torch", reason="torch is needed to build the reference model")

ON_MAC = platform.system() == "Darwin"
SPEC = TensorSpec("input", ("batch", 3, 32, 32))


def package_bytes(folder) -> int:
    return sum(p.stat().st_size for p in (folder / "model.mlpackage").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def model():
    return small_hvt()


@pytest.fixture(scope="module")
def source(model) -> ModelSource:
    return ModelSource([SPEC], ["logits"], module=model)


@pytest.fixture(scope="module")
def backend():
    return get_backend("coreml")


@pytest.fixture(scope="module")
def built(backend, source, tmp_path_factory):
    """Builds keyed by (precision, target), converted once per module."""
    cache = {}

    def build(precision: str, target: str | None = None, batch=(1, 4)):
        key = (precision, target, tuple(batch))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"coreml_{precision}")
            options = BuildOptions(precision=precision, batch=batch,
                                   runtime=CoreMLOptions(minimum_deployment_target=target))
            cache[key] = (out, backend.build(source, out, options), options)
        return cache[key]

    return build


def test_availability_builds_everywhere_runs_on_mac(backend):
    status = backend.availability()
    assert status.available and status.can_build
    assert status.can_run is ON_MAC
    if not ON_MAC:
        assert status.reason == RUN_REASON == "Core ML prediction runs only on macOS"


@pytest.mark.slow
def test_fp16_program_has_expected_io_and_ops(built):
    out, result, _ = built("fp16")
    assert result.files == ("model.mlpackage",) and (out / "model.mlpackage").is_dir()
    info = describe_mlprogram(out / "model.mlpackage")
    assert info["inputs"] == [{"name": "input", "shape": (1, 3, 32, 32), "dtype": "float32"}]
    assert info["outputs"] == [{"name": "logits", "shape": (1, 10), "dtype": "float32"}]
    assert info["precision"] == "fp16"
    # fp32 IO around an fp16 body: one cast in, one out.
    assert info["ops"]["cast"] == 2
    assert {"conv", "layer_norm", "max_pool", "linear", "gelu", "reduce_mean"} <= set(info["op_types"])
    # The default target predates the fused attention op: attention is matmul + softmax.
    assert {"matmul", "softmax"} <= set(info["op_types"]) and not info["fused_attention"]
    assert result.details["batch"] == 1 and result.details["compute_precision"] == "fp16"


@pytest.mark.slow
def test_ios18_target_fuses_attention(built):
    out, result, _ = built("fp16", "iOS18")
    info = describe_mlprogram(out / "model.mlpackage")
    assert info["ops"]["scaled_dot_product_attention"] == 2  # one per block
    assert "softmax" not in info["op_types"]
    assert result.details["fused_attention"] and result.details["minimum_deployment_target"] == "iOS18"
    assert info["opset"] == "CoreML8"


def test_fp32_program_has_no_casts(built):
    out, result, _ = built("fp32")
    info = describe_mlprogram(out / "model.mlpackage")
    assert info["precision"] == "fp32" and "cast" not in info["ops"]
    assert info["activation_dtypes"].get("float16", 0) == 0
    assert result.details["compute_precision"] == "fp32" and "Neural Engine" in result.details["note"]


@pytest.mark.slow
def test_int8_quantizes_weights(built):
    out, result, _ = built("int8", "iOS17")
    info = describe_mlprogram(out / "model.mlpackage")
    # Default threshold 2048 elements: qkv, fc1, fc2 per block and the patch conv; proj (32x32) and
    # the head (10x32) stay fp16.
    assert info["quantized_weights"] and info["ops"]["constexpr_affine_dequantize"] == 7
    assert result.details["quantized_weight_tensors"] == 7
    assert info["precision"] == "fp16"
    assert result.details["weights"] == "int8 linear_symmetric"
    assert package_bytes(out) < package_bytes(built("fp16")[0])


@pytest.mark.slow
def test_int8_threshold_quantizes_small_layers_too(backend, source, tmp_path):
    options = BuildOptions(precision="int8", runtime=CoreMLOptions(minimum_deployment_target="iOS18",
                                                                   int8_weight_threshold=0))
    result = backend.build(source, tmp_path, options)
    info = describe_mlprogram(tmp_path / "model.mlpackage")
    # iOS18 programs use the newer blockwise op; every weight constant is int8 now: 9 linears, the
    # patch conv and the 3 position embeddings.
    assert info["ops"]["constexpr_blockwise_shift_scale"] == result.details["quantized_weight_tensors"] == 13


@pytest.mark.slow
def test_static_batch_is_the_first_listed(built):
    out, result, _ = built("fp16", None, batch=(2, 4))
    assert result.details["batch"] == 2 and result.details["batches"] == [2]
    assert describe_mlprogram(out / "model.mlpackage")["inputs"][0]["shape"] == (2, 3, 32, 32)


@pytest.mark.slow
def test_enumerated_batches_cover_every_listed_batch(backend, source, tmp_path):
    options = BuildOptions(precision="fp16", batch=(1, 4), runtime=CoreMLOptions(batch_shapes="enumerated"))
    result = backend.build(source, tmp_path, options)
    (feature,) = describe_mlprogram(tmp_path / "model.mlpackage")["inputs"]
    assert feature["shape"] == (1, 3, 32, 32)  # the default: the first listed batch
    assert feature["enumerated_shapes"] == [(1, 3, 32, 32), (4, 3, 32, 32)]
    assert result.details["batches"] == [1, 4]
    with pytest.raises(RuntimeAdapterError, match="batch_shapes"):
        backend.parse_options({"batch_shapes": "range"})


def test_shape_helpers():
    assert static_batch((4, 1)) == 4
    assert SPEC.shape_at(3) == (3, 3, 32, 32)
    with pytest.raises(RuntimeAdapterError, match="dynamic dim 2"):
        TensorSpec("input", ("batch", 3, "h", 32)).shape_at(1)
    with pytest.raises(RuntimeAdapterError, match="positive"):
        static_batch((0,))


@pytest.mark.parametrize(("extra", "message"), [
    ({"minimum_deployment_target": "iOS99"}, "iOS99.*iOS18"),
    ({"compute_units": "NPU"}, "NPU.*CPU_AND_NE"),
])
def test_bad_options_are_refused(backend, source, tmp_path, extra, message):
    with pytest.raises(RuntimeAdapterError, match=message):
        backend.build(source, tmp_path, BuildOptions(precision="fp16", runtime=backend.parse_options(extra)))


def test_needs_the_module(backend, tmp_path):
    with pytest.raises(RuntimeAdapterError, match="module"):
        backend.build(ModelSource([SPEC], ["logits"]), tmp_path, BuildOptions(precision="fp16"))


def test_describe_rejects_a_non_model(tmp_path):
    bogus = tmp_path / "model.mlpackage"
    bogus.mkdir()
    (bogus / "Manifest.json").write_text("{not json")
    with pytest.raises(EngineLoadError, match="model.mlpackage"):
        describe_mlprogram(bogus)


def test_missing_engine(backend, tmp_path):
    with pytest.raises(EngineLoadError, match="missing"):
        backend.load(tmp_path, "model.mlpackage", BuildOptions())


@pytest.mark.skipif(ON_MAC, reason="checks the Linux behaviour; on macOS prediction runs")
def test_runner_refuses_off_mac_with_the_reason(built, backend):
    out, result, options = built("fp16")
    runner = backend.load(out, result.files[0], options)
    with pytest.raises(RuntimeUnavailableError, match="only on macOS"):
        runner.activate()
    assert not runner.is_active


@pytest.mark.skipif(not ON_MAC, reason=RUN_REASON)
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 2e-2), ("int8", 5e-2)])
def test_prediction_matches_pytorch_on_mac(built, backend, model, precision, tolerance):
    out, result, options = built(precision)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with backend.load(out, result.files[0], options) as runner, torch.inference_mode():
        got = runner.infer({"input": x})["logits"]
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() < tolerance


@pytest.mark.skipif(not ON_MAC, reason=RUN_REASON)
def test_enumerated_batches_predict_on_mac(backend, source, model, tmp_path):
    options = BuildOptions(precision="fp32", batch=(1, 4), runtime=CoreMLOptions(batch_shapes="enumerated"))
    result = backend.build(source, tmp_path, options)
    with backend.load(tmp_path, result.files[0], options) as runner, torch.inference_mode():
        for batch in (1, 4):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            got = runner.infer({"input": x})["logits"]
            want = model(torch.from_numpy(x)).numpy()
            assert got.shape == (batch, 10)
            assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


class _ScaledAttention(torch.nn.Module):
    def __init__(self, scale: float | None):
        super().__init__()
        self.scale, self.qkv = scale, torch.nn.Linear(8, 24)

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)


@pytest.mark.parametrize(("scale", "folded"), [(0.3, 1), (None, 0)])
def test_fold_attention_scale_keeps_the_function(scale, folded):
    from runtimes.coreml_convert import fold_attention_scale

    module, x = _ScaledAttention(scale).eval(), torch.randn(2, 5, 8)
    program = torch.export.export(module, (x,)).run_decompositions({})
    assert fold_attention_scale(program) == folded
    sdpa = [n for n in program.graph.nodes if n.target is torch.ops.aten.scaled_dot_product_attention.default]
    assert len(sdpa) == 1 and "scale" not in sdpa[0].kwargs
    with torch.no_grad():
        assert torch.allclose(program.module()(x), module(x), atol=1e-6)
