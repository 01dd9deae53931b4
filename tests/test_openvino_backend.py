"""OpenVINO adapter: build IR from a small HVT's ONNX, check parity per precision against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import small_hvt

from runtimes import BuildOptions, EngineLoadError, ModelSource, RuntimeAdapterError, TensorSpec, get_backend
from runtimes.openvino_backend import resolve_overflow_fix
from runtimes.openvino_options import OpenVINOOptions, check_device, inference_precision, runtime_config
from runtimes.openvino_runner import one_line

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install -e .[openvino]")
torch = pytest.importorskip("torch", reason="torch is needed to build the reference model")

SPEC = TensorSpec("input", ("batch", 3, 32, 32))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to the largest reference magnitude."""
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def model():
    return small_hvt()


@pytest.fixture(scope="module")
def source(model, tmp_path_factory) -> ModelSource:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), path, input_names=["input"],
                      output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                      opset_version=18, dynamo=True, verbose=False)
    return ModelSource([SPEC], ["logits"], onnx_path=path, module=model)


@pytest.fixture(scope="module")
def backend():
    return get_backend("openvino")


@pytest.fixture(scope="module")
def cpu_caps() -> list[str]:
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def build_and_load(backend, source, out_dir, **kwargs):
    options = BuildOptions(batch=(1, 4), threads=2, **kwargs)
    result = backend.build(source, out_dir, options)
    runner = backend.load(out_dir, result.files[0], options)
    return result, runner


def parity(model, runner, batches=(1, 3), seed=0) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    errors = {}
    with runner:
        for batch in batches:
            x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
            with torch.inference_mode():
                want = model(torch.from_numpy(x)).numpy()
            got = runner.infer({"input": x})["logits"]
            assert got.shape == want.shape == (batch, 10)
            errors[batch] = relative_error(got, want)
    return errors


@pytest.fixture(scope="module")
def fp32_build(backend, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    result, runner = build_and_load(backend, source, out, precision="fp32")
    return out, result, runner


def test_available_here(backend):
    status = backend.availability()
    assert status.available and status.can_build and status.can_run
    assert "CPU" in status.devices


@pytest.mark.slow
def test_fp32_matches_pytorch_at_batch_1_and_3(model, fp32_build):
    out, result, runner = fp32_build
    assert set(result.files) >= {"model.xml", "model.bin"}
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    errors = parity(model, runner)
    assert max(errors.values()) < 1e-4, errors
    assert result.details["runtime_config"]["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.slow
def test_fp32_runner_really_runs_f32_with_threads(fp32_build):
    _, result, runner = fp32_build
    assert result.details["runtime_config"]["INFERENCE_NUM_THREADS"] == 2
    with runner:
        assert runner.effective["INFERENCE_PRECISION_HINT"] == "f32"
        assert runner.effective["INFERENCE_NUM_THREADS"] == "2"
        assert runner.input_specs[0].shape[0] is None  # the dynamic batch survives conversion


@pytest.mark.slow
def test_bf16_is_its_own_precision(model, backend, source, tmp_path, cpu_caps):
    result, runner = build_and_load(backend, source, tmp_path, precision="bf16")
    assert result.details["inference_precision"] == "bf16"
    errors = parity(model, runner)
    assert max(errors.values()) < 5e-2, errors
    if "BF16" in cpu_caps:
        # Proof the hint took: bf16 rounding shows well above fp32 noise.
        assert max(errors.values()) > 1e-4, errors
        assert runner.effective["INFERENCE_PRECISION_HINT"] == "bf16"


@pytest.mark.slow
def test_fp16_compresses_weights_and_says_what_runs(model, backend, source, tmp_path, cpu_caps, fp32_build):
    result, runner = build_and_load(backend, source, tmp_path, precision="fp16")
    fp32_dir = fp32_build[0]
    assert (tmp_path / "model.bin").stat().st_size < 0.7 * (fp32_dir / "model.bin").stat().st_size
    want = "f16" if "FP16" in cpu_caps else "f32"
    assert result.details["inference_precision"] == want
    assert "fp16 weights" in result.details["inference_precision_reason"]
    errors = parity(model, runner)
    assert max(errors.values()) < 1e-2, errors


def test_the_overflow_fix_is_every_layer_on_x86_without_vnni():
    assert resolve_overflow_fix("auto", "fpu sse4_2 avx2 fma") == "enable"  # AVX2-only EPYC: u8 x s8 saturates
    assert resolve_overflow_fix("auto", "sse4_2 avx2 avx512f avx512_vnni") == "first_layer_only"
    assert resolve_overflow_fix("auto", "sse4_2 avx2 avx_vnni") == "first_layer_only"
    assert resolve_overflow_fix("auto", "fp asimd asimddp") == "first_layer_only"  # not x86
    assert resolve_overflow_fix("disable", "avx2") == "disable"
    with pytest.raises(RuntimeAdapterError, match="overflow_fix"):
        OpenVINOOptions(overflow_fix="sometimes")


def test_int8_needs_calibration(backend, source, tmp_path):
    with pytest.raises(RuntimeAdapterError, match="calibration"):
        backend.build(source, tmp_path, BuildOptions(precision="int8"))


@pytest.mark.slow
@pytest.mark.nncf
@pytest.mark.parametrize(("model_type", "max_error", "min_cosine"),
                         [("transformer", 0.45, 0.9), ("none", 0.15, 0.98)])
def test_int8_with_nncf_calibration(model, backend, source, tmp_path, model_type, max_error, min_cosine):
    pytest.importorskip("nncf", reason="int8 needs nncf (pip install -e .[openvino])")
    rng = np.random.default_rng(1)
    calibration = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(64)]
    result, runner = build_and_load(backend, source, tmp_path, precision="int8", calibration=calibration,
                                    runtime=OpenVINOOptions(nncf_model_type=model_type))
    assert result.details["int8"] == {**result.details["int8"], "calibration_samples": 64,
                                      "nncf_model_type": model_type, "overflow_fix": resolve_overflow_fix("auto")}
    assert "FakeQuantize" in (tmp_path / "model.xml").read_text()
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    with runner, torch.inference_mode():
        got, want = runner.infer({"input": x})["logits"], model(torch.from_numpy(x)).numpy()
    # A random-init 32-wide model has small, nearly flat logits, so int8 noise is large relative to
    # them (measured 0.2-0.34 with NNCF's transformer preset, 0.02-0.06 without); the cosine checks
    # direction.
    assert relative_error(got, want) < max_error
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > min_cosine, cosine


@pytest.mark.nncf
def test_int8_rejects_unknown_nncf_model_type(backend, source, tmp_path):
    calibration = [{"input": np.zeros((1, 3, 32, 32), np.float32)}]
    with pytest.raises(RuntimeAdapterError, match="nncf_model_type"):
        backend.build(source, tmp_path, BuildOptions(precision="int8", calibration=calibration,
                                                     runtime=backend.parse_options({"nncf_model_type": "cnn"})))


def test_runtime_config_from_options(backend, source, tmp_path):
    result, runner = build_and_load(backend, source, tmp_path, precision="fp32",
                                    runtime=backend.parse_options({"performance_hint": "throughput",
                                                                   "num_streams": "2"}))
    config = result.details["runtime_config"]
    assert config["PERFORMANCE_HINT"] == "THROUGHPUT" and config["NUM_STREAMS"] == 2
    with runner:
        assert runner.effective["NUM_STREAMS"] == "2"
        assert "THROUGHPUT" in runner.effective["PERFORMANCE_HINT"]


def test_bad_runtime_config_is_refused():
    with pytest.raises(RuntimeAdapterError, match="LATENCY"):
        runtime_config(BuildOptions(runtime=OpenVINOOptions(performance_hint="fastest")), "CPU", "f32")
    with pytest.raises(RuntimeAdapterError, match="num_streams"):
        runtime_config(BuildOptions(runtime=OpenVINOOptions(num_streams=0)), "CPU", "f32")
    # Threads are a CPU-plugin property only.
    assert "INFERENCE_NUM_THREADS" not in runtime_config(BuildOptions(threads=4), "GPU", "f16")


def test_missing_device_lists_present_ones(backend, source, tmp_path):
    with pytest.raises(RuntimeAdapterError, match=r"'NPU' is not present here \(available: CPU"):
        backend.build(source, tmp_path, BuildOptions(device="NPU"))


def test_check_device_rules():
    assert check_device("GPU.1", ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    assert check_device("GPU", ["CPU", "GPU.0"]) == "GPU"
    assert check_device("AUTO:GPU,CPU", ["CPU"]) == "AUTO:GPU,CPU"
    with pytest.raises(RuntimeAdapterError, match="GPU.2"):
        check_device("GPU.2", ["CPU", "GPU.0"])


def test_inference_precision_rules():
    assert inference_precision("fp32", ["BF16", "FP32"])[0] == "f32"
    assert inference_precision("bf16", ["BF16"])[0] == "bf16"
    assert inference_precision("fp16", ["FP16", "FP32"])[0] == "f16"
    hint, why = inference_precision("fp16", ["BF16", "FP32"])
    assert hint == "f32" and "bf16" in why


@pytest.mark.parametrize("content", ["<net>garbage", "<?xml version='1.0'?><foo><bar/></foo>"])
def test_corrupt_or_foreign_xml_fails_in_one_line(backend, tmp_path, content):
    (tmp_path / "model.xml").write_text(content)
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    runner = backend.load(tmp_path, "model.xml", BuildOptions())
    with pytest.raises(EngineLoadError) as info:
        runner.activate()
    message = str(info.value)
    assert "\n" not in message and "model.xml" in message
    assert not runner.is_active


def test_missing_weights_file(backend, fp32_build, tmp_path):
    (tmp_path / "model.xml").write_bytes((fp32_build[0] / "model.xml").read_bytes())
    with pytest.raises(EngineLoadError, match="model.bin"):
        backend.load(tmp_path, "model.xml", BuildOptions())


def test_unconvertible_onnx_is_a_clear_error(backend, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    source = ModelSource([SPEC], ["logits"], onnx_path=tmp_path / "bad.onnx")
    with pytest.raises(RuntimeAdapterError, match="cannot convert .*bad.onnx") as info:
        backend.build(source, tmp_path, BuildOptions())
    assert "\n" not in str(info.value)


def test_precision_not_supported(backend, source, tmp_path):
    with pytest.raises(RuntimeAdapterError, match="int4"):
        backend.build(source, tmp_path, BuildOptions(precision="int4"))


def test_one_line_skips_location_lines():
    exc = RuntimeError("Exception from src/core.cpp:84:\nCheck 'x' failed\nUnable to read the model\n\n")
    assert one_line(exc) == "Unable to read the model"
