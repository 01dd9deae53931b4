"""TensorRT adapter.

Without TensorRT (this machine): routing, profiles, cache keys, sidecar checks, error messages and
availability run for real; the builder and runner run against stand-ins of each real TensorRT and
cuda-python release, generated from their API surfaces (tests/standin_*.py, tests/data/*_api/), so a call a
release lacks fails here as it would there. Nothing here builds a real engine. With TensorRT and a GPU
(NVIDIA's container, a Jetson), the tests at the bottom build and run real engines.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import trt_cases
from standin_cuda import CUDA_RELEASES
from standin_surface import load_surface, version_key
from standin_tensorrt import TRT_RELEASES

from runtimes import (
    BuildOptions,
    EngineLoadError,
    InputMismatchError,
    ModelSource,
    RuntimeAdapterError,
    RuntimeUnavailableError,
    TensorSpec,
    get_backend,
)
from runtimes.tensorrt import UNAVAILABLE_REASON, cuda
from runtimes.tensorrt.build import build_serialized, pin_fp32_layers
from runtimes.tensorrt.cache import (
    engine_cache_dir,
    engine_cache_key,
    key_digest,
    lookup_cached_engine,
    read_sidecar,
    timing_cache_path,
    verify_sidecar,
)
from runtimes.tensorrt.cuda import DeviceInfo
from runtimes.tensorrt.plan import (
    BuildPlan,
    DlaSettings,
    GraphTypes,
    TensorRTOptions,
    choose_route,
    dla_settings,
    has_dla,
    inspect_onnx,
    make_plan,
    optimisation_profile,
    parse_version,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
SPEC = TensorSpec("input", ("batch", 3, 32, 32))
FP32 = GraphTypes(float16=False, qdq=False)
FP16 = GraphTypes(float16=True, qdq=False)
QDQ = GraphTypes(float16=False, qdq=True)
ORIN = DeviceInfo("Orin", "8.7")
SURFACES = {release: load_surface("tensorrt", release) for release in TRT_RELEASES}


# ---------------------------------------------------------------- availability

@pytest.mark.skipif(HAVE_TRT, reason="checks the reason given where tensorrt is not installed")
def test_unavailable_without_tensorrt_says_why(tmp_path):
    backend = get_backend("tensorrt")
    status = backend.availability()
    assert not status.available and not status.can_build and not status.can_run
    assert status.reason == ("the tensorrt Python package is not installed "
                             "(NVIDIA's TensorRT container or JetPack provides it)")
    source = ModelSource([SPEC], ["logits"], onnx_path=tmp_path / "model.onnx")
    with pytest.raises(RuntimeUnavailableError, match="tensorrt Python package is not installed"):
        backend.build(source, tmp_path, BuildOptions())


def test_no_gpu_is_not_available(monkeypatch):
    trt_cases.install(monkeypatch, "10.13.3.9", gpus=[])
    status = get_backend("tensorrt").availability()
    assert not status.available and status.version == "10.13.3.9"
    assert status.reason == "no CUDA GPU is visible here"
    monkeypatch.setattr(cuda, "import_cudart", lambda: None)
    assert "cuda-python is not installed" in get_backend("tensorrt").availability().reason


@pytest.mark.parametrize(("cuda", "reason"), [
    # cuda-python 12.2 raises when it cannot load libcuda.so.1; later bindings return an error code.
    ("cuda-python-12.2.1", "no CUDA driver is usable here (Failed to dlopen libcuda.so.1)"),
    ("cuda-bindings-12.9.10", "no CUDA GPU is usable here (cudaGetDeviceCount failed: "
                              "cudaErrorInsufficientDriver (35))"),
    ("cuda-bindings-13.5.0", "no CUDA GPU is usable here (cudaGetDeviceCount failed: "
                             "cudaErrorInsufficientDriver (35))"),
])
def test_no_driver_is_a_reason_not_a_traceback(monkeypatch, cuda, reason):
    trt_cases.install(monkeypatch, "10.3.0", cuda, driver=False)
    assert get_backend("tensorrt").availability().reason == reason


# ---------------------------------------------------------------- routing

def test_parse_version():
    assert parse_version("10.13.0.35") == (10, 13, 0)
    assert parse_version("11.0") == (11, 0, 0)
    with pytest.raises(RuntimeAdapterError):
        parse_version("unknown")


@pytest.mark.parametrize(("version", "precision", "graph", "route", "flags"), [
    ((10, 3, 0), "fp32", FP32, "flags", ()),
    ((10, 12, 0), "fp32", FP32, "strong", ()),
    ((11, 0, 0), "fp32", FP32, "strong", ()),
    ((10, 3, 0), "fp16", FP32, "flags", ("FP16",)),  # the pre-10.12 default
    ((10, 13, 0), "fp16", FP32, "flags", ("FP16",)),  # deprecated fallback, still allowed
    ((10, 3, 0), "fp16", FP16, "strong", ()),  # an fp16 graph is strongly typed everywhere
    ((11, 1, 0), "fp16", FP16, "strong", ()),
    ((10, 8, 0), "int8", QDQ, "flags", ("INT8", "FP16")),
    ((10, 12, 0), "int8", QDQ, "strong", ()),
    ((11, 0, 0), "int8", QDQ, "strong", ()),
])
def test_route_table(version, precision, graph, route, flags):
    chosen = choose_route(version, precision, graph)
    assert (chosen.name, chosen.flags) == (route, flags)
    # LayerNorm/Softmax pinning belongs to reduced precision on the flag route only.
    assert chosen.pin_fp32 == (route == "flags" and precision != "fp32")


def test_fp16_fallback_on_10_12_says_it_is_deprecated():
    assert "deprecated" in choose_route((10, 13, 0), "fp16", FP32).reason
    assert "deprecated" not in choose_route((10, 3, 0), "fp16", FP32).reason


def test_tensorrt_11_needs_an_fp16_graph():
    with pytest.raises(RuntimeAdapterError, match="fp16 ONNX graph.*only fp32 tensors"):
        choose_route((11, 0, 0), "fp16", FP32)
    with pytest.raises(RuntimeAdapterError, match="fp16 ONNX graph"):
        choose_route((10, 13, 0), "fp16", FP32, requested="strong")


def test_forced_routes_and_refusals():
    assert choose_route((10, 13, 0), "fp32", FP32, requested="flags").name == "flags"
    assert choose_route((10, 3, 0), "fp32", FP32, requested="strong").name == "strong"
    with pytest.raises(RuntimeAdapterError, match="removed weak typing"):
        choose_route((11, 0, 0), "fp32", FP32, requested="flags")
    with pytest.raises(RuntimeAdapterError, match="not one of auto, strong, flags"):
        choose_route((10, 13, 0), "fp32", FP32, requested="weak")
    with pytest.raises(RuntimeAdapterError, match=">= 10.0"):
        choose_route((8, 6, 1), "fp32", FP32)


def test_int8_needs_qdq_and_fp32_refuses_a_reduced_graph():
    with pytest.raises(RuntimeAdapterError, match="Q/DQ ONNX graph.*IInt8Calibrator"):
        choose_route((10, 3, 0), "int8", FP32)
    with pytest.raises(RuntimeAdapterError, match="not fp32"):
        choose_route((10, 13, 0), "fp32", FP16)


def _graph(path: Path, elem_type: int, op: str = "Relu") -> Path:
    import onnx
    from onnx import TensorProto, helper

    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("zero", TensorProto.INT8, [], [0])
    inputs = ["x", "scale", "zero"] if op == "QuantizeLinear" else ["x"]
    node = helper.make_node(op, inputs, ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem_type, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
                              initializer=[scale, zero] if op == "QuantizeLinear" else [])
    onnx.save(helper.make_model(graph), path)
    return path


def test_inspect_onnx_reads_precision(tmp_path):
    from onnx import TensorProto

    assert inspect_onnx(_graph(tmp_path / "a.onnx", TensorProto.FLOAT)) == FP32
    assert inspect_onnx(_graph(tmp_path / "b.onnx", TensorProto.FLOAT16)).float16
    assert inspect_onnx(_graph(tmp_path / "c.onnx", TensorProto.FLOAT, "QuantizeLinear")).qdq


# ---------------------------------------------------------------- profile, DLA, plan

def test_profile_min_opt_max():
    profile = optimisation_profile([SPEC], (1, 4))
    assert profile == {"input": ((1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32))}
    # opt is the first listed batch, not the largest.
    assert optimisation_profile([SPEC], (8, 1, 16))["input"][1][0] == 8
    assert optimisation_profile([SPEC], (1, 4), opt_batch=4)["input"][1][0] == 4


def test_profile_refusals():
    with pytest.raises(RuntimeAdapterError, match="outside the batch range"):
        optimisation_profile([SPEC], (1, 4), opt_batch=8)
    with pytest.raises(RuntimeAdapterError, match="positive ints"):
        optimisation_profile([SPEC], ())
    with pytest.raises(RuntimeAdapterError, match="only the batch dim may be dynamic"):
        optimisation_profile([TensorSpec("input", ("batch", 3, "h", "w"))], (1,))


def test_dla_settings():
    assert dla_settings(TensorRTOptions(), "fp16") is None
    assert dla_settings(TensorRTOptions(dla_core=1), "fp16") == DlaSettings(1, True)
    assert dla_settings(TensorRTOptions(dla_core=0, gpu_fallback=False), "int8") == DlaSettings(0, False)
    with pytest.raises(RuntimeAdapterError, match="fp16 or int8 only"):
        dla_settings(TensorRTOptions(dla_core=0), "fp32")
    with pytest.raises(RuntimeAdapterError, match="DLA core index"):
        dla_settings(TensorRTOptions.parse({"dla_core": "-1"}), "fp16")
    assert [has_dla(v) for v in ((10, 16, 1), (11, 0, 0), (11, 3, 9), (11, 4, 0), (11, 4, 1))] == [
        True, False, False, False, True]


def test_plan_tf32_off_for_fp32_only():
    assert not make_plan((10, 13, 0), BuildOptions(precision="fp32"), FP32, [SPEC]).tf32
    tf32 = BuildOptions(precision="fp32", runtime=TensorRTOptions(tf32=True))
    assert make_plan((10, 13, 0), tf32, FP32, [SPEC]).tf32
    plan = make_plan((10, 3, 0), BuildOptions(precision="fp16", batch=(1, 4)), FP32, [SPEC])
    assert plan.tf32 and plan.builder_flags() == ["FP16", "OBEY_PRECISION_CONSTRAINTS", "TF32"]


# ---------------------------------------------------------------- cache key and sidecar

def _key(**changes):
    fields = dict(tensorrt_version="10.13.0.35", device=ORIN, model_sha256="ab" * 32, precision="fp16",
                  route=choose_route((10, 13, 0), "fp16", FP16), builder_flags=["TF32"],
                  profile=optimisation_profile([SPEC], (1, 4)), dla=None, workspace_mib=None)
    fields.update(changes)
    return engine_cache_key(**fields)


def test_cache_key_fields_and_digest():
    key = _key()
    assert {"tensorrt_version", "gpu_name", "compute_capability", "model_sha256", "precision", "route",
            "builder_flags", "profile", "dla", "workspace_mib"} == set(key)
    assert key["profile"]["input"] == [[1, 3, 32, 32], [1, 3, 32, 32], [4, 3, 32, 32]]
    assert json.loads(json.dumps(key)) == key  # it goes into a JSON sidecar
    assert key_digest(key) == key_digest(_key())
    for change in ({"device": DeviceInfo("Orin", "8.6")}, {"device": DeviceInfo("RTX 4090", "8.9")},
                   {"tensorrt_version": "10.14.1"}, {"model_sha256": "cd" * 32}, {"precision": "int8"},
                   {"dla": DlaSettings(0)}, {"profile": optimisation_profile([SPEC], (1, 8))}):
        assert key_digest(_key(**change)) != key_digest(key), change


def test_timing_cache_path_is_per_version_and_gpu(tmp_path):
    path = timing_cache_path(tmp_path, "10.13.0.35", DeviceInfo("NVIDIA GeForce RTX 4090", "8.9"))
    assert path == tmp_path / "tensorrt" / "timing" / "trt10.13.0.35-nvidia-geforce-rtx-4090-sm8.9.cache"
    assert path != timing_cache_path(tmp_path, "10.13.0.35", ORIN)


def test_verify_sidecar_refuses_another_gpu_or_version():
    sidecar = {"key": _key(), "engine_sha256": "e" * 64}
    here = {"tensorrt_version": "10.13.0.35", "gpu_name": "Orin", "compute_capability": "8.7"}
    verify_sidecar(sidecar, "e" * 64, here)  # same machine: fine
    with pytest.raises(EngineLoadError, match="gpu_name: engine 'Orin', here 'RTX 4090'"):
        verify_sidecar(sidecar, "e" * 64, {**here, "gpu_name": "RTX 4090", "compute_capability": "8.9"})
    with pytest.raises(EngineLoadError, match="tensorrt_version"):
        verify_sidecar(sidecar, "e" * 64, {**here, "tensorrt_version": "10.14.1"})
    with pytest.raises(EngineLoadError, match="engine bytes differ"):
        verify_sidecar(sidecar, "f" * 64, here)


def test_read_sidecar_errors(tmp_path):
    with pytest.raises(EngineLoadError, match="missing; re-run export"):
        read_sidecar(tmp_path / "model.engine")
    (tmp_path / "model.engine").write_bytes(b"plan")
    with pytest.raises(EngineLoadError, match="model.engine.json is missing"):
        read_sidecar(tmp_path / "model.engine")
    (tmp_path / "model.engine.json").write_text("{")
    with pytest.raises(EngineLoadError, match="not valid JSON"):
        read_sidecar(tmp_path / "model.engine")
    (tmp_path / "model.engine.json").write_text("{}")
    with pytest.raises(EngineLoadError, match="lacks key, engine_sha256"):
        read_sidecar(tmp_path / "model.engine")


def test_load_without_sidecar_fails_before_needing_tensorrt(tmp_path):
    (tmp_path / "model.engine").write_bytes(b"plan")
    with pytest.raises(EngineLoadError, match="cannot be checked against this GPU"):
        get_backend("tensorrt").load(tmp_path, "model.engine", BuildOptions())


# ---------------------------------------------------------------- builder calls (stand-ins of real releases)

@pytest.fixture
def onnx_file(tmp_path) -> Path:
    return trt_cases.fp32_graph(tmp_path / "model.onnx")


def _plan(version, precision="fp16", graph=FP32, timing=None, batch=(1, 4), **extra) -> BuildPlan:
    plan = make_plan(version, BuildOptions(precision=precision, batch=batch, runtime=TensorRTOptions(**extra)),
                     graph, [trt_cases.SPEC])
    plan.timing_cache = timing
    return plan


def _build(monkeypatch, release, path, precision="fp16", graph=FP32, **extra):
    machine = trt_cases.install(monkeypatch, release, **extra.pop("machine", {}))
    version = parse_version(machine.trt.__version__)
    engine, pinned = build_serialized(machine.trt, path, _plan(version, precision, graph, **extra), version)
    return machine, machine.state.builds[-1], pinned


@pytest.mark.parametrize("release", trt_cases.TRT10)
def test_flag_route_sets_fp16_and_pins_norms(monkeypatch, onnx_file, release):
    machine, header, pinned = _build(monkeypatch, release, onnx_file)
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(header["flags"]) and not header["strongly_typed"]
    assert pinned == ["ln", "attn", "mean"]
    assert machine.state.errors() == []
    assert header["profile"] == {"x": [[1, 4, 8], [1, 4, 8], [4, 4, 8]]}


@pytest.mark.parametrize("release", trt_cases.TRT10)
def test_flag_route_pins_precision_and_output_types(monkeypatch, onnx_file, release):
    machine = trt_cases.install(monkeypatch, release)
    trt = machine.trt
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt.Logger())
    assert parser.parse_from_file(str(onnx_file))
    pinned = pin_fp32_layers(trt, network)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    assert [layer.name for layer in layers if layer.precision == trt.float32 and
            layer.get_output_type(0) == trt.float32] == pinned == ["ln", "attn", "mean"]
    assert machine.state.errors() == []


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_strong_route_network_flags_come_from_the_release(monkeypatch, tmp_path, release):
    machine, header, pinned = _build(monkeypatch, release, trt_cases.fp16_graph(tmp_path / "m.onnx"), graph=FP16)
    members = SURFACES[release]["classes"]["NetworkDefinitionCreationFlag"]["members"]
    expected = {"STRONGLY_TYPED"} if version_key(release) < (11,) else set()  # 11: always strong, flag ignored
    network = machine.state.last_network
    assert network._state["flags"] == expected and header["strongly_typed"]
    assert members["STRONGLY_TYPED"] == (1 if version_key(release) < (11,) else 0)
    assert pinned == [] and not {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(header["flags"])
    assert machine.state.errors() == []  # no layer precision touched on a strongly typed network


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_qdq_int8_route(monkeypatch, tmp_path, release):
    machine, header, pinned = _build(monkeypatch, release, trt_cases.qdq_graph(tmp_path / "m.onnx"), "int8", QDQ)
    if version_key(release) < (10, 12):
        assert {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(header["flags"]) and not header["strongly_typed"]
    else:
        assert header["strongly_typed"] and not {"INT8", "FP16"} & set(header["flags"])
    assert machine.state.errors() == []


@pytest.mark.parametrize("release", [TRT_RELEASES[0], TRT_RELEASES[-1]])
def test_fp32_clears_tf32_and_sets_workspace(monkeypatch, onnx_file, release):
    machine, header, _ = _build(monkeypatch, release, onnx_file, "fp32", workspace_mib=512)
    assert "TF32" not in header["flags"] and machine.state.last_config._state["pools"] == {"WORKSPACE": 512 << 20}


@pytest.mark.parametrize("release", trt_cases.TRT10)
def test_dla_builds_a_static_profile_on_the_dla(monkeypatch, onnx_file, release):
    machine, header, _ = _build(monkeypatch, release, onnx_file, batch=(4,), dla_core=1, machine={"dla_cores": 2})
    assert header["profile"] == {"x": [[4, 4, 8]] * 3}  # min = opt = max: DLA runs static shapes only
    assert set(header["devices"].values()) == {"DLA"} and header["dla_core"] == 1
    assert "GPU_FALLBACK" in header["flags"] and machine.state.errors() == []
    with pytest.raises(RuntimeAdapterError, match="DLA core 2 requested; this device has 2"):
        _build(monkeypatch, release, onnx_file, batch=(1,), dla_core=2, machine={"dla_cores": 2})


def test_dla_refuses_several_batches_and_releases_without_dla():
    with pytest.raises(RuntimeAdapterError, match=r"static shapes only .* one engine per batch .*asked for 1, 4\)"):
        _plan((10, 3, 0), batch=(1, 4), dla_core=0)
    for version in [parse_version(r) for r in trt_cases.TRT11]:
        with pytest.raises(RuntimeAdapterError, match=r"this TensorRT \(11\.\d+\.0\) has no DLA"):
            _plan(version, "fp16", FP16, batch=(1,), dla_core=0)
    assert _plan((11, 4, 1), "fp16", FP16, batch=(1,), dla_core=0).dla == DlaSettings(0, True)


def test_a_dynamic_profile_on_dla_falls_back_to_the_gpu(monkeypatch, onnx_file):
    """The stand-in mirrors the DLA restriction the adapter now respects: what a (1, 4) profile would do."""
    machine = trt_cases.install(monkeypatch, "10.3.0", dla_cores=1)
    plan = _plan((10, 3, 0), batch=(1,), dla_core=0)
    plan.profile = optimisation_profile([trt_cases.SPEC], (1, 4))
    build_serialized(machine.trt, onnx_file, plan, (10, 3, 0))
    assert set(machine.state.builds[-1]["devices"].values()) == {"GPU"}
    assert any("falls back to the GPU" in message for _, message in machine.state.log)


@pytest.mark.parametrize("release", [TRT_RELEASES[1], TRT_RELEASES[-1]])
def test_timing_cache_is_reused(monkeypatch, onnx_file, tmp_path, release, caplog):
    machine = trt_cases.install(monkeypatch, release)
    version = parse_version(machine.trt.__version__)
    path = tmp_path / "timing" / "trt.cache"
    build_serialized(machine.trt, onnx_file, _plan(version, "fp32", timing=path), version)
    entries = json.loads(path.read_bytes().split(b"\n", 1)[1])["entries"]
    build_serialized(machine.trt, onnx_file, _plan(version, "fp32", timing=path), version)
    assert json.loads(path.read_bytes().split(b"\n", 1)[1])["entries"] == 2 * entries > 0
    assert not caplog.records  # the stand-in cache counts the tactics of every build that used it


@pytest.mark.parametrize(("content", "why"), [
    (b"not a timing cache", "cannot be read"),  # create_timing_cache gives None
    (None, "was made on another GPU or TensorRT version"),  # set_timing_cache gives False
])
def test_unusable_timing_cache_gives_a_fresh_one_and_one_warning(monkeypatch, onnx_file, tmp_path, caplog,
                                                                 content, why):
    path = tmp_path / "trt.cache"
    if content is None:  # a readable cache from another GPU
        other = trt_cases.install(monkeypatch, "10.13.3.9", gpus=[trt_cases.Gpu("RTX 4090", 8, 9)])
        build_serialized(other.trt, onnx_file, _plan((10, 13, 3), "fp32", timing=path), (10, 13, 3))
    else:
        path.write_bytes(content)
    machine = trt_cases.install(monkeypatch, "10.13.3.9")
    with caplog.at_level(logging.WARNING, logger="runtimes.tensorrt.build"):
        build_serialized(machine.trt, onnx_file, _plan((10, 13, 3), "fp32", timing=path), (10, 13, 3))
    assert [r.getMessage() for r in caplog.records] == [
        f"tensorrt: timing cache {path} {why}; starting a fresh one (the build overwrites it)"]
    saved = json.loads(path.read_bytes().split(b"\n", 1)[1])
    assert saved["origin"]["gpu"] == "Orin" and saved["entries"] == 4  # fresh: only this build's tactics


def test_parser_errors_are_reported(monkeypatch, tmp_path):
    path = trt_cases.unsupported_graph(tmp_path / "model.onnx")
    with pytest.raises(RuntimeAdapterError, match=r"rejected .*model.onnx: In node 0: No importer .*: Celu"):
        _build(monkeypatch, "10.3.0", path)


@pytest.fixture
def fake_machine(monkeypatch):
    """The 10.13 stand-in as `tensorrt` with one GPU (an Orin) behind cuda-python's runtime API."""
    return trt_cases.install(monkeypatch, "10.13.3.9")


def _source(path: Path) -> ModelSource:
    return ModelSource([trt_cases.SPEC], [trt_cases.OUTPUT], onnx_path=path)


def test_backend_build_writes_engine_sidecar_and_reuses_the_cache(fake_machine, onnx_file, tmp_path):
    backend = get_backend("tensorrt")
    options = BuildOptions(precision="fp16", batch=(1, 4), runtime=TensorRTOptions(cache_dir=str(tmp_path / "cache")))
    first = backend.build(_source(onnx_file), tmp_path / "a", options)
    assert first.files == ("model.engine", "model.engine.json") and first.batches is None
    assert first.details["engine_cache"] == "miss" and first.details["route"] == "flags"
    assert first.details["fp32_layers"] == ["ln", "attn", "mean"]
    sidecar = json.loads((tmp_path / "a" / "model.engine.json").read_text())
    assert sidecar["key"]["gpu_name"] == "Orin" and sidecar["key"]["compute_capability"] == "8.7"
    assert sidecar["key"]["tensorrt_version"] == "10.13.3.9"
    assert sidecar["inputs"] == [{"name": "x", "shape": [None, 4, 8], "dtype": "float32"}]
    second = backend.build(_source(onnx_file), tmp_path / "b", options)
    assert second.details["engine_cache"] == "hit" and len(fake_machine.state.builds) == 1  # no second build
    assert second.details["fp32_layers"] == first.details["fp32_layers"]
    assert (tmp_path / "b" / "model.engine").read_bytes() == (tmp_path / "a" / "model.engine").read_bytes()
    assert Path(first.details["timing_cache"]).is_file()


def test_backend_dla_build_serves_its_one_batch(monkeypatch, onnx_file, tmp_path):
    trt_cases.install(monkeypatch, "10.3.0", dla_cores=1)
    options = BuildOptions(precision="fp16", batch=(2,), runtime=TensorRTOptions(dla_core=0, engine_cache=False,
                                                                                 cache_dir=str(tmp_path)))
    assert get_backend("tensorrt").build(_source(onnx_file), tmp_path / "a", options).batches == (2,)


def test_cached_engine_is_not_reused_when_its_bytes_changed(fake_machine, onnx_file, tmp_path):
    backend = get_backend("tensorrt")
    options = BuildOptions(precision="fp32", runtime=TensorRTOptions(cache_dir=str(tmp_path / "cache")))
    key = backend.build(_source(onnx_file), tmp_path / "a", options).details["key"]
    folder = engine_cache_dir(tmp_path / "cache", key)
    assert lookup_cached_engine(folder, key) is not None
    (folder / "model.engine").write_bytes(b"tampered")
    assert lookup_cached_engine(folder, key) is None
    assert lookup_cached_engine(folder, {**key, "precision": "fp16"}) is None


def test_backend_load_refuses_an_engine_from_another_gpu(fake_machine, onnx_file, tmp_path):
    backend = get_backend("tensorrt")
    options = BuildOptions(precision="fp32", runtime=TensorRTOptions(engine_cache=False, cache_dir=str(tmp_path)))
    backend.build(_source(onnx_file), tmp_path / "a", options)
    runner = backend.load(tmp_path / "a", "model.engine", options)  # same machine: accepted
    assert [s.name for s in runner.input_specs] == ["x"] and runner.output_names == ["y"]
    assert runner.profile["x"][2] == (1, 4, 8)
    fake_machine.state.cuda.gpus[0] = trt_cases.Gpu("NVIDIA GeForce RTX 4090", 8, 9)
    with pytest.raises(EngineLoadError, match="compute_capability: engine '8.7', here '8.9'"):
        backend.load(tmp_path / "a", "model.engine", options)


@pytest.mark.parametrize("release", trt_cases.TRT11)
def test_backend_build_refuses_fp16_from_fp32_graph_on_trt11(monkeypatch, onnx_file, tmp_path, release):
    trt_cases.install(monkeypatch, release)
    with pytest.raises(RuntimeAdapterError, match=r"TensorRT 11\.\d+\.0 builds fp16 only from an fp16 ONNX graph"):
        get_backend("tensorrt").build(_source(onnx_file), tmp_path, BuildOptions(precision="fp16"))


def test_missing_cuda_device_index(fake_machine, onnx_file, tmp_path):
    with pytest.raises(RuntimeAdapterError, match="CUDA device 3 is not present"):
        get_backend("tensorrt").build(_source(onnx_file), tmp_path, BuildOptions(device="cuda:3"))
    with pytest.raises(RuntimeAdapterError, match="not a CUDA device index"):
        get_backend("tensorrt").build(_source(onnx_file), tmp_path, BuildOptions(device="NPU"))


# ---------------------------------------------------------------- the runner (stand-in runtime and cuda-python)

def _built(monkeypatch, tmp_path, release, cuda=None, batch=(1, 4), **machine):
    stand_in = trt_cases.install(monkeypatch, release, cuda, **machine)
    path = trt_cases.fp32_graph(tmp_path / "model.onnx")
    options = BuildOptions(precision="fp32", batch=batch,
                           runtime=TensorRTOptions(engine_cache=False, cache_dir=str(tmp_path / "cache")))
    get_backend("tensorrt").build(_source(path), tmp_path / "a", options)
    return stand_in, get_backend("tensorrt").load(tmp_path / "a", "model.engine", options)


@pytest.mark.parametrize(("release", "cuda"), [*((r, trt_cases.cuda_for(r)) for r in TRT_RELEASES),
                                               *(("10.13.3.9", c) for c in CUDA_RELEASES)])
def test_runner_activates_allocates_and_infers(monkeypatch, tmp_path, release, cuda):
    stand_in, runner = _built(monkeypatch, tmp_path, release, cuda)
    memory = stand_in.state.cuda
    with runner:
        # _allocate: one buffer per IO tensor, sized for the profile's max batch (4).
        assert sorted(len(b) for b in memory.allocations.values()) == [4 * 8 * 4, 4 * 4 * 8 * 4]
        for batch in (1, 3, 4):
            x = np.random.default_rng(batch).standard_normal((batch, 4, 8)).astype(np.float32)
            got = runner.infer({"x": x})["y"]
            assert got.shape == (batch, 8) and np.abs(got - trt_cases.reference(x)).max() < 1e-5
        runner.synchronize()
        assert [kind for kind, _ in memory.copies[:2]] == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
        with pytest.raises(InputMismatchError, match="outside the engine's profile"):
            runner.infer({"x": np.zeros((5, 4, 8), np.float32)})
    assert memory.allocations == {} and memory.streams == set()  # deactivate freed everything
    assert stand_in.state.errors() == []


def test_runner_failed_allocation_frees_what_it_took(monkeypatch, tmp_path):
    stand_in, runner = _built(monkeypatch, tmp_path, "11.4.0.106", gpus=[trt_cases.Gpu(memory_bytes=200)])
    with pytest.raises(RuntimeAdapterError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation \(2\)"):
        runner.activate()
    assert not runner.is_active and stand_in.state.cuda.allocations == {} and stand_in.state.cuda.streams == set()


def test_runner_refuses_an_engine_the_runtime_cannot_deserialize(monkeypatch, tmp_path):
    stand_in, runner = _built(monkeypatch, tmp_path, "10.16.1.11")
    runner.engine_path.write_bytes(b"corrupt")  # the sidecar check is load's job; here the runtime says None
    with pytest.raises(EngineLoadError, match="TensorRT cannot deserialize"):
        runner.activate()
    assert stand_in.state.cuda.streams == set()


def test_runner_on_dla_sets_the_runtime_core(monkeypatch, tmp_path):
    stand_in = trt_cases.install(monkeypatch, "10.3.0", dla_cores=2)
    path = trt_cases.fp32_graph(tmp_path / "model.onnx")
    options = BuildOptions(precision="fp16", batch=(2,), runtime=TensorRTOptions(dla_core=1, engine_cache=False,
                                                                                 cache_dir=str(tmp_path)))
    get_backend("tensorrt").build(_source(path), tmp_path / "a", options)
    with get_backend("tensorrt").load(tmp_path / "a", "model.engine", options) as runner:
        assert runner._engine._state["runtime"]._state["DLA_core"] == 1
        x = np.ones((2, 4, 8), np.float32)
        assert np.abs(runner.infer({"x": x})["y"] - trt_cases.reference(x)).max() < 1e-5
        with pytest.raises(InputMismatchError, match="outside the engine's profile"):
            runner.infer({"x": np.ones((1, 4, 8), np.float32)})
    assert stand_in.state.errors() == []



# ---------------------------------------------------------------- real TensorRT on a GPU

def _trt_runnable() -> tuple[bool, str]:
    if not HAVE_TRT:
        return False, UNAVAILABLE_REASON
    status = get_backend("tensorrt").availability()
    return status.can_run, status.reason


RUNNABLE, WHY_NOT = _trt_runnable()
needs_gpu = pytest.mark.skipif(not RUNNABLE, reason=f"TensorRT engines need TensorRT and a GPU: {WHY_NOT}")


@pytest.fixture(scope="module")
def hvt_source(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch builds the reference model")
    from models.hvt import HVT

    torch.manual_seed(0)
    model = HVT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pool_block_width=1,
                num_classes=10).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), path, input_names=["input"],
                      output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                      opset_version=18, dynamo=True)
    return model, ModelSource([SPEC], ["logits"], onnx_path=path, module=model)


def _parity(model, runner, batches=(1, 3)) -> float:
    import torch

    worst = 0.0
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        got = runner.infer({"input": x})["logits"]
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    return worst


@needs_gpu
def test_real_fp32_engine_matches_pytorch(hvt_source, tmp_path):
    model, source = hvt_source
    backend = get_backend("tensorrt")
    options = BuildOptions(precision="fp32", batch=(1, 4), runtime=TensorRTOptions(cache_dir=str(tmp_path / "cache")))
    result = backend.build(source, tmp_path / "fp32", options)
    with backend.load(tmp_path / "fp32", result.files[0], options) as runner:
        assert _parity(model, runner) < 1e-4
        runner.synchronize()
        with pytest.raises(InputMismatchError, match="outside the engine's profile"):
            runner.infer({"input": np.zeros((5, 3, 32, 32), np.float32)})


@needs_gpu
def test_real_fp16_engine_on_the_flag_route(hvt_source, tmp_path):
    import tensorrt as trt

    if parse_version(trt.__version__) >= (11, 0, 0):
        pytest.skip("TensorRT 11 builds fp16 only from an fp16 ONNX graph, which the export stage makes")
    model, source = hvt_source
    backend = get_backend("tensorrt")
    options = BuildOptions(precision="fp16", batch=(1, 4),
                           runtime=TensorRTOptions(engine_cache=False, cache_dir=str(tmp_path / "cache")))
    result = backend.build(source, tmp_path / "fp16", options)
    assert result.details["route"] == "flags" and result.details["fp32_layers"]
    with backend.load(tmp_path / "fp16", result.files[0], options) as runner:
        assert _parity(model, runner) < 1e-2

