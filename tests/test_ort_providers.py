"""ONNX Runtime's execution providers: typed options, ORT's provider names and options, and fallback detection.

Here (ONNX Runtime's CPU build) the options, the mapping and the fallback check run for real: asking for a
provider this build lacks is refused, or warned about and recorded, naming the provider it falls back to. The
OpenVINO provider runs where `onnxruntime-openvino` replaces the onnxruntime wheel; the CUDA and TensorRT
providers need `onnxruntime-gpu` and a GPU, and skip without them.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
import trt_cases

from deploy.cli import main
from runtimes import BuildOptions, EngineLoadError, ModelSource, RuntimeAdapterError, doctor, get_backend
from runtimes.ort_providers import PROVIDERS, OrtOptions, ProviderCheck, provider_settings

AVAILABLE = tuple(ort.get_available_providers())
# A provider this onnxruntime build lacks (the CPU build lacks all three), to see it fall back.
LACKING = next((name for name in ("cuda", "tensorrt", "openvino") if PROVIDERS[name] not in AVAILABLE), None)
needs_lacking = pytest.mark.skipif(LACKING is None, reason="this onnxruntime build has every provider, so none "
                                                           "falls back for lack of its library")


def _options(**values) -> OrtOptions:
    return get_backend("onnxruntime").parse_options(values)  # type: ignore[return-value]


def _source(tmp_path) -> ModelSource:
    return ModelSource([trt_cases.SPEC], [trt_cases.OUTPUT], onnx_path=trt_cases.fp32_graph(tmp_path / "g.onnx"))


def _check_infers(runner) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    assert np.abs(runner.infer({"x": x})["y"] - trt_cases.reference(x)).max() < 1e-5


# ---------------------------------------------------------------- options

def test_providers_parse_from_the_command_line_json_and_ort_names():
    options = _options(providers="cuda, CPU", device_id="1", cudnn_conv_algo_search="heuristic")
    assert options.providers == ("cuda", "cpu") and options.device_id == 1
    assert options.cudnn_conv_algo_search == "HEURISTIC"
    assert _options(providers=["TensorrtExecutionProvider", "cuda"]).providers == ("tensorrt", "cuda")
    # What a manifest stores (to_json) parses back to the same options.
    saved = _options(providers="openvino,cpu", openvino_device="gpu.1", on_fallback="warn")
    assert saved.to_json()["providers"] == ["openvino", "cpu"]
    assert OrtOptions.parse(saved.to_json()) == saved and saved.openvino_device == "GPU.1"


@pytest.mark.parametrize(("values", "message"), [
    ({"providers": "gpu"}, "onnxruntime provider 'gpu' is not one of cuda, tensorrt, openvino, cpu"),
    ({"providers": "cuda,cuda"}, "names one twice"),
    ({"providers": ","}, "providers is empty"),
    ({"cudnn_conv_algo_search": "fast"}, "is not one of EXHAUSTIVE, HEURISTIC, DEFAULT"),
    ({"on_fallback": "ignore"}, "on_fallback 'ignore' is not one of error, warn"),
    ({"device_id": "-1"}, "device_id must be a CUDA device index"),
    ({"device_id": "first"}, "device_id must be int, not 'first'"),
    ({"providers": "cuda", "fp16": "1"}, "unknown option(s) fp16"),
])
def test_bad_values_are_one_line(values, message):
    with pytest.raises(RuntimeAdapterError) as error:
        _options(**values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_each_provider_gets_ort_names_and_its_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_DEPLOY_CACHE", str(tmp_path))
    options = _options(providers="tensorrt,cuda,openvino,cpu", device_id="1", trt_fp16="true",
                       cudnn_conv_algo_search="DEFAULT", openvino_device="GPU")
    assert provider_settings(options, "int8", threads=4) == [
        ("TensorrtExecutionProvider", {"device_id": "1", "trt_fp16_enable": "True", "trt_int8_enable": "True",
                                       "trt_engine_cache_enable": "True",
                                       "trt_engine_cache_path": str(tmp_path / "ort-tensorrt")}),
        ("CUDAExecutionProvider", {"device_id": "1", "cudnn_conv_algo_search": "DEFAULT"}),
        ("OpenVINOExecutionProvider", {"device_type": "GPU", "precision": "ACCURACY", "num_of_threads": "4"}),
        ("CPUExecutionProvider", {}),
    ]
    uncached = _options(providers="tensorrt", trt_engine_cache="false")
    assert provider_settings(uncached, "fp32") == [
        ("TensorrtExecutionProvider", {"device_id": "0", "trt_fp16_enable": "False", "trt_int8_enable": "False",
                                       "trt_engine_cache_enable": "False"})]


def test_a_provider_that_failed_to_start_is_told_from_one_the_build_lacks():
    started = ProviderCheck(("CUDAExecutionProvider",), ("CUDAExecutionProvider", "CPUExecutionProvider"),
                            ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert started.dropped == () and started.message() is None
    failed = ProviderCheck(("CUDAExecutionProvider",), ("CPUExecutionProvider",),
                           ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert failed.message() == ("onnxruntime: asked for CUDAExecutionProvider, but the session falls back to "
                                "CPUExecutionProvider: CUDAExecutionProvider failed to start (ORT's log above says "
                                "why: missing CUDA, cuDNN or TensorRT libraries, or no such device)")


def test_doctor_lists_the_providers_here(monkeypatch):
    monkeypatch.setattr(doctor, "target_names", lambda: ["onnxruntime"])  # the other runtimes take seconds to probe
    [row] = doctor.runtime_report()
    assert row["providers"] == list(AVAILABLE) and "CPUExecutionProvider" in row["providers"]
    assert row["options"]["providers"] == ["cpu"] and row["options"]["on_fallback"] == "error"
    text = doctor.format_report([row])
    assert f"providers here: {', '.join(AVAILABLE)}" in text and "--option (defaults): providers=cpu, " in text


# ---------------------------------------------------------------- fallback, with this onnxruntime build

@needs_lacking
def test_a_lacking_provider_is_refused_at_build_naming_the_fallback(tmp_path):
    backend, asked = get_backend("onnxruntime"), PROVIDERS[LACKING]
    out = tmp_path / "engine"
    out.mkdir()
    with pytest.raises(EngineLoadError) as error:
        backend.build(_source(tmp_path), out, BuildOptions(runtime=_options(providers=f"{LACKING},cpu")))
    message = str(error.value)
    assert message.startswith(f"onnxruntime: asked for {asked}, but the session falls back to CPUExecutionProvider")
    assert "on_fallback=warn" in message and "\n" not in message
    assert list(out.iterdir()) == []  # refused before anything was written


@needs_lacking
def test_with_on_fallback_warn_the_engine_runs_and_records_what_it_ran_on(tmp_path, caplog):
    backend, asked = get_backend("onnxruntime"), PROVIDERS[LACKING]
    options = BuildOptions(runtime=_options(providers=LACKING, on_fallback="warn"))
    result = backend.build(_source(tmp_path), tmp_path, options)
    details = result.details
    assert details["providers"] == ["CPUExecutionProvider"] and details["requested_providers"] == [asked]
    assert details["fallback"].startswith(f"onnxruntime: asked for {asked}, but the session falls back to "
                                          "CPUExecutionProvider")
    with caplog.at_level(logging.WARNING, logger="runtimes.ort_backend"), \
            backend.load(tmp_path, result.files[0], options) as runner:
        _check_infers(runner)
        assert runner.providers is not None and runner.providers.active == ("CPUExecutionProvider",)
    assert [r.getMessage() for r in caplog.records if r.name == "runtimes.ort_backend"] == [details["fallback"]]


@needs_lacking
def test_an_engine_loaded_where_its_provider_is_missing_is_refused(tmp_path):
    """An artifact exported on a GPU machine and loaded here: the runner checks its own session."""
    backend = get_backend("onnxruntime")
    result = backend.build(_source(tmp_path), tmp_path, BuildOptions())
    assert result.details["providers"] == result.details["requested_providers"] == ["CPUExecutionProvider"]
    runner = backend.load(tmp_path, result.files[0], BuildOptions(runtime=_options(providers=LACKING)))
    with pytest.raises(EngineLoadError, match=f"asked for {PROVIDERS[LACKING]}, but the session falls back"):
        runner.activate()
    assert not runner.is_active


@pytest.mark.slow  # exports hvt_digits through the whole stage (about 10 s here)
@needs_lacking
def test_export_refuses_a_provider_that_falls_back_in_one_line(tmp_path, capsys):
    """The acceptance check: `export --option providers=cuda` on this CPU machine is one error line, exit 2."""
    code = main(["export", "hvt_digits", "--target", "onnxruntime", "--option", f"providers={LACKING}",
                 "--batch", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: onnxruntime: asked for {PROVIDERS[LACKING]}, but the session falls back to "
                             "CPUExecutionProvider")
    assert not (tmp_path / "hvt_digits" / "onnxruntime-fp32").exists()


@pytest.mark.slow  # exports hvt_digits through the whole stage (about 10 s here)
@needs_lacking
def test_an_exported_fallback_is_recorded_and_its_providers_come_back_at_load(tmp_path, capsys, caplog):
    from deploy.export import load_artifact

    asked = PROVIDERS[LACKING]
    assert main(["export", "hvt_digits", "--target", "onnxruntime", "--option", f"providers={LACKING},cpu",
                 "--option", "on_fallback=warn", "--batch", "1", "--out", str(tmp_path)]) == 0
    assert "PASS" in capsys.readouterr().out
    folder = tmp_path / "hvt_digits" / "onnxruntime-fp32"
    runner, manifest = load_artifact(folder)
    assert manifest.engine.details["providers"] == ["CPUExecutionProvider"]
    assert manifest.engine.details["requested_providers"] == [asked, "CPUExecutionProvider"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runtimes.ort_backend"), runner:
        assert runner.providers is not None and runner.providers.requested == (asked, "CPUExecutionProvider")
    warned = [r.getMessage() for r in caplog.records if r.name == "runtimes.ort_backend"]
    assert warned == [manifest.engine.details["fallback"]]
    runner, _ = load_artifact(folder, options={"on_fallback": "error"})  # `--option` on bench, profile, predict
    with pytest.raises(EngineLoadError, match=f"asked for {asked}, but the session falls back"):
        runner.activate()


# ---------------------------------------------------------------- the other providers, where installed

@pytest.mark.skipif("OpenVINOExecutionProvider" not in AVAILABLE,
                    reason="onnxruntime-openvino is not installed: it replaces the onnxruntime wheel (its newest "
                           "release, 1.24.1, against the onnxruntime 1.32 the project installs), so CI does not "
                           "install it; pip install -e .[onnxruntime-openvino] runs this")
def test_the_openvino_provider_runs_and_keeps_fp32(tmp_path):
    backend = get_backend("onnxruntime")
    options = BuildOptions(threads=2, runtime=_options(providers="openvino,cpu"))
    result = backend.build(_source(tmp_path), tmp_path, options)
    assert result.details["providers"][0] == "OpenVINOExecutionProvider" and result.details["fallback"] is None
    with backend.load(tmp_path, result.files[0], options) as runner:
        _check_infers(runner)  # 1e-5: fp32, not the bf16 OpenVINO would pick on AVX512-BF16 CPUs


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_the_gpu_providers_run(tmp_path, provider):
    if PROVIDERS[provider] not in AVAILABLE:
        pytest.skip(f"{PROVIDERS[provider]} needs onnxruntime-gpu (pip install -e .[onnxruntime-gpu]"
                    f"{', and TensorRT' if provider == 'tensorrt' else ''}) and a CUDA GPU; this onnxruntime build "
                    f"has {', '.join(AVAILABLE)}")
    backend = get_backend("onnxruntime")
    options = BuildOptions(runtime=_options(providers=f"{provider},cpu", trt_cache_dir=str(tmp_path / "trt")))
    result = backend.build(_source(tmp_path), tmp_path, options)
    assert result.details["providers"][0] == PROVIDERS[provider]
    with backend.load(tmp_path, result.files[0], options) as runner:
        _check_infers(runner)
