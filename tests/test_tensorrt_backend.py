"""TensorRT adapter.

Without TensorRT (this machine): routing, profiles, cache keys, sidecar checks, error messages and
availability run for real; the builder calls run against a small recording stand-in for the
`tensorrt` module (`FakeTRT`), which checks which API calls each route makes. With TensorRT and a
GPU (NVIDIA's container, a Jetson), the tests at the bottom build and run real engines.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

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
from runtimes import tensorrt_backend as trtb
from runtimes.tensorrt_backend import (
    BuildPlan,
    DeviceInfo,
    DlaSettings,
    GraphTypes,
    TensorRTOptions,
    build_serialized,
    choose_route,
    dla_settings,
    engine_cache_key,
    inspect_onnx,
    key_digest,
    lookup_cached_engine,
    make_plan,
    optimisation_profile,
    parse_version,
    read_sidecar,
    timing_cache_path,
    verify_sidecar,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
SPEC = TensorSpec("input", ("batch", 3, 32, 32))
FP32 = GraphTypes(float16=False, qdq=False)
FP16 = GraphTypes(float16=True, qdq=False)
QDQ = GraphTypes(float16=False, qdq=True)
ORIN = DeviceInfo("Orin", "8.7")


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
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT("10.13.0.35"))
    monkeypatch.setattr(trtb, "import_cudart", lambda: FakeCudart(count=0))
    status = get_backend("tensorrt").availability()
    assert not status.available and status.version == "10.13.0.35"
    assert status.reason == "no CUDA GPU is visible here"
    monkeypatch.setattr(trtb, "import_cudart", lambda: None)
    assert "cuda-python is not installed" in get_backend("tensorrt").availability().reason


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


# ---------------------------------------------------------------- builder calls (fake tensorrt)

class _Named:
    def __init__(self, name: str, value: int = 0):
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


class _Enum:
    def __init__(self, *names: str):
        for value, name in enumerate(names):
            setattr(self, name, _Named(name, value))


class FakeLayer:
    def __init__(self, name: str, kind: str):
        self.name, self.type, self.precision, self.num_outputs = name, _Named(kind), None, 1
        self.output_types: dict[int, object] = {}

    def set_output_type(self, index: int, dtype) -> None:
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, flags: int):
        self.flags = flags
        self.layers = [FakeLayer("conv", "CONVOLUTION"), FakeLayer("ln", "NORMALIZATION"),
                       FakeLayer("qk", "MATRIX_MULTIPLY"), FakeLayer("attn", "SOFTMAX"),
                       FakeLayer("mean", "REDUCE")]
        self.num_layers = len(self.layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+timed"


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeConfig:
    def __init__(self):
        self.flags = {"TF32"}  # on by default, as in TensorRT
        self.profiles, self.pools = [], {}
        self.default_device_type = self.DLA_core = self.timing_cache = None
        self.timing_cache_seed = None

    def set_flag(self, flag) -> None:
        self.flags.add(flag.name)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag.name)

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        self.timing_cache_seed = data
        return FakeTimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        if cache.data.startswith(b"other-gpu"):
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class FakeParser:
    errors: list[str] = []

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path: str) -> bool:
        assert Path(path).name.endswith(".onnx")
        return not self.errors

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class FakeTRT(types.ModuleType):
    """The slice of the `tensorrt` module the adapter's builder uses, recording what it was asked."""

    def __init__(self, version: str, dla_cores: int = 0):
        super().__init__("tensorrt")
        self.__version__ = version
        self.float32 = _Named("float32")
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Named("STRONGLY_TYPED", 1))
        self.BuilderFlag = _Enum("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK", "TF32")
        self.MemoryPoolType = _Enum("WORKSPACE")
        self.DeviceType = _Enum("GPU", "DLA")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.OnnxParser = FakeParser
        self.built: list[tuple[FakeNetwork, FakeConfig]] = []
        trt = self

        class Builder:
            num_DLA_cores = dla_cores

            def __init__(self, logger):
                pass

            def create_network(self, flags: int) -> FakeNetwork:
                return FakeNetwork(flags)

            def create_builder_config(self) -> FakeConfig:
                return FakeConfig()

            def create_optimization_profile(self) -> FakeProfile:
                return FakeProfile()

            def build_serialized_network(self, network, config):
                trt.built.append((network, config))
                return b"engine:" + ",".join(sorted(config.flags)).encode()

        self.Builder = Builder


class FakeCudart:
    def __init__(self, count: int = 1, name: bytes = b"Orin\x00\x00", cc: tuple[int, int] = (8, 7)):
        self.count, self.props = count, types.SimpleNamespace(name=name, major=cc[0], minor=cc[1])

    def cudaGetDeviceCount(self):
        return (0, self.count)

    def cudaGetDeviceProperties(self, index: int):
        return (0, self.props)

    def cudaSetDevice(self, index: int):
        return (0,)


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    from onnx import TensorProto

    return _graph(tmp_path / "model.onnx", TensorProto.FLOAT)


def _plan(version, precision="fp16", graph=FP32, timing=None, **extra) -> BuildPlan:
    plan = make_plan(version, BuildOptions(precision=precision, batch=(1, 4), runtime=TensorRTOptions(**extra)),
                     graph, [SPEC])
    plan.timing_cache = timing
    return plan


def test_flag_route_sets_fp16_and_pins_norms(onnx_file):
    trt = FakeTRT("10.3.0")
    engine, pinned = build_serialized(trt, onnx_file, _plan((10, 3, 0)), (10, 3, 0))
    network, config = trt.built[-1]
    assert network.flags == 0 and engine.startswith(b"engine:")
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= config.flags
    assert pinned == ["ln", "attn", "mean"]
    for layer in network.layers:
        pinned_here = layer.name in pinned
        assert (layer.precision is trt.float32) == pinned_here
        assert (layer.output_types == {0: trt.float32}) == pinned_here
    assert config.profiles[0].shapes == {"input": ((1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32))}


def test_strong_route_on_10_x_uses_the_creation_flag(onnx_file):
    trt = FakeTRT("10.13.0")
    _, pinned = build_serialized(trt, onnx_file, _plan((10, 13, 0), graph=FP16), (10, 13, 0))
    network, config = trt.built[-1]
    assert network.flags == 1 << 1  # 1 << int(STRONGLY_TYPED)
    assert pinned == [] and not {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & config.flags
    assert all(layer.precision is None for layer in network.layers)


def test_strong_route_on_11_passes_no_flags(onnx_file):
    trt = FakeTRT("11.0.0")
    build_serialized(trt, onnx_file, _plan((11, 0, 0), graph=FP16), (11, 0, 0))
    assert trt.built[-1][0].flags == 0  # STRONGLY_TYPED is deprecated and ignored in 11


def test_fp32_clears_tf32_and_sets_workspace(onnx_file):
    trt = FakeTRT("10.13.0")
    build_serialized(trt, onnx_file, _plan((10, 13, 0), "fp32", workspace_mib=512), (10, 13, 0))
    config = trt.built[-1][1]
    assert "TF32" not in config.flags and config.pools == {"WORKSPACE": 512 << 20}


def test_dla_with_gpu_fallback(onnx_file):
    trt = FakeTRT("10.3.0", dla_cores=2)
    build_serialized(trt, onnx_file, _plan((10, 3, 0), dla_core=1), (10, 3, 0))
    config = trt.built[-1][1]
    assert config.default_device_type is trt.DeviceType.DLA and config.DLA_core == 1
    assert "GPU_FALLBACK" in config.flags
    with pytest.raises(RuntimeAdapterError, match="DLA core 2 requested; this device has 2"):
        build_serialized(trt, onnx_file, _plan((10, 3, 0), dla_core=2), (10, 3, 0))


def test_timing_cache_is_reused(onnx_file, tmp_path):
    trt = FakeTRT("10.13.0")
    path = tmp_path / "timing" / "trt.cache"
    build_serialized(trt, onnx_file, _plan((10, 13, 0), "fp32", timing=path), (10, 13, 0))
    assert trt.built[-1][1].timing_cache_seed == b"" and path.read_bytes() == b"+timed"
    build_serialized(trt, onnx_file, _plan((10, 13, 0), "fp32", timing=path), (10, 13, 0))
    assert trt.built[-1][1].timing_cache_seed == b"+timed"  # the second build starts from the first
    path.write_bytes(b"other-gpu")  # a foreign cache is refused and replaced, not mixed in
    build_serialized(trt, onnx_file, _plan((10, 13, 0), "fp32", timing=path), (10, 13, 0))
    assert trt.built[-1][1].timing_cache_seed == b"" and path.read_bytes() == b"+timed"


def test_parser_errors_are_reported(onnx_file, monkeypatch):
    monkeypatch.setattr(FakeParser, "errors", ["In node 3 (Attention): unsupported op\ndetail", "other"])
    message = r"rejected .*model.onnx: In node 3 .*unsupported op \(\+1 more\)"
    with pytest.raises(RuntimeAdapterError, match=message):
        build_serialized(FakeTRT("10.3.0"), onnx_file, _plan((10, 3, 0)), (10, 3, 0))


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """Installs FakeTRT as `tensorrt` and a one-GPU cuda-python stand-in."""
    trt = FakeTRT("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cudart = FakeCudart()
    monkeypatch.setattr(trtb, "import_cudart", lambda: cudart)
    return trt, cudart


def test_backend_build_writes_engine_sidecar_and_reuses_the_cache(fake_machine, onnx_file, tmp_path):
    trt, cudart = fake_machine
    backend = get_backend("tensorrt")
    source = ModelSource([SPEC], ["logits"], onnx_path=onnx_file)
    options = BuildOptions(precision="fp16", batch=(1, 4), runtime=TensorRTOptions(cache_dir=str(tmp_path / "cache")))
    first = backend.build(source, tmp_path / "a", options)
    assert first.files == ("model.engine", "model.engine.json")
    assert first.details["engine_cache"] == "miss" and first.details["route"] == "flags"
    assert first.details["fp32_layers"] == ["ln", "attn", "mean"]
    sidecar = json.loads((tmp_path / "a" / "model.engine.json").read_text())
    assert sidecar["key"]["gpu_name"] == "Orin" and sidecar["key"]["compute_capability"] == "8.7"
    assert sidecar["inputs"] == [{"name": "input", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    second = backend.build(source, tmp_path / "b", options)
    assert second.details["engine_cache"] == "hit" and len(trt.built) == 1  # no second build
    assert second.details["fp32_layers"] == first.details["fp32_layers"]
    assert (tmp_path / "b" / "model.engine").read_bytes() == (tmp_path / "a" / "model.engine").read_bytes()
    assert Path(first.details["timing_cache"]).is_file()


def test_cached_engine_is_not_reused_when_its_bytes_changed(fake_machine, onnx_file, tmp_path):
    backend = get_backend("tensorrt")
    source = ModelSource([SPEC], ["logits"], onnx_path=onnx_file)
    options = BuildOptions(precision="fp32", runtime=TensorRTOptions(cache_dir=str(tmp_path / "cache")))
    key = backend.build(source, tmp_path / "a", options).details["key"]
    folder = trtb.engine_cache_dir(tmp_path / "cache", key)
    assert lookup_cached_engine(folder, key) is not None
    (folder / "model.engine").write_bytes(b"tampered")
    assert lookup_cached_engine(folder, key) is None
    assert lookup_cached_engine(folder, {**key, "precision": "fp16"}) is None


def test_backend_load_refuses_an_engine_from_another_gpu(fake_machine, onnx_file, tmp_path):
    trt, cudart = fake_machine
    backend = get_backend("tensorrt")
    source = ModelSource([SPEC], ["logits"], onnx_path=onnx_file)
    options = BuildOptions(precision="fp32", runtime=TensorRTOptions(engine_cache=False, cache_dir=str(tmp_path)))
    backend.build(source, tmp_path / "a", options)
    runner = backend.load(tmp_path / "a", "model.engine", options)  # same machine: accepted
    assert [s.name for s in runner.input_specs] == ["input"] and runner.output_names == ["logits"]
    assert runner.profile["input"][2] == (1, 3, 32, 32)
    cudart.props = types.SimpleNamespace(name=b"NVIDIA GeForce RTX 4090", major=8, minor=9)
    with pytest.raises(EngineLoadError, match="compute_capability: engine '8.7', here '8.9'"):
        backend.load(tmp_path / "a", "model.engine", options)


def test_backend_build_refuses_fp16_from_fp32_graph_on_trt11(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT("11.0.0.1"))
    monkeypatch.setattr(trtb, "import_cudart", lambda: FakeCudart())
    source = ModelSource([SPEC], ["logits"], onnx_path=onnx_file)
    with pytest.raises(RuntimeAdapterError, match="TensorRT 11.0.0 builds fp16 only from an fp16 ONNX graph"):
        get_backend("tensorrt").build(source, tmp_path, BuildOptions(precision="fp16"))


def test_missing_cuda_device_index(fake_machine, onnx_file, tmp_path):
    source = ModelSource([SPEC], ["logits"], onnx_path=onnx_file)
    with pytest.raises(RuntimeAdapterError, match="CUDA device 3 is not present"):
        get_backend("tensorrt").build(source, tmp_path, BuildOptions(device="cuda:3"))
    with pytest.raises(RuntimeAdapterError, match="not a CUDA device index"):
        get_backend("tensorrt").build(source, tmp_path, BuildOptions(device="NPU"))


# ---------------------------------------------------------------- real TensorRT on a GPU

def _trt_runnable() -> tuple[bool, str]:
    if not HAVE_TRT:
        return False, trtb.UNAVAILABLE_REASON
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

