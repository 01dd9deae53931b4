"""The TensorRT adapter against the real API surfaces of every release it targets (tests/data/*_api/).

1. The stand-ins are the releases: each generated module has exactly its release's names, enum values,
   properties (with or without setter) and methods; nothing more.
2. Facts the adapter relies on hold in the fixtures (so a refreshed fixture that breaks one fails here).
3. Every route (strongly typed, builder flags, Q/DQ int8, DLA, the runner) runs on every release it is
   used on; every `trt.` and `cudart.` attribute it reached exists in that release, nothing it reached lacks a
   behaviour, and TensorRT logged no error. Routes a release cannot take are refused before TensorRT is touched.
4. Every `trt.`/`cudart.` reference written in the adapter's package (runtimes/tensorrt/*.py) is reached by some
   route, so (3) covers the whole adapter; and only the modules that run TensorRT or CUDA write any.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import trt_cases
from standin_cuda import CUDA_RELEASES, CudaMachine, CudaRuntime
from standin_surface import StandInObject, load_surface, version_key
from standin_tensorrt import TRT_RELEASES, make_tensorrt

from runtimes import BuildOptions, ModelSource, RuntimeAdapterError, get_backend
from runtimes import tensorrt as trt_package
from runtimes.profiling import ProfileRequest
from runtimes.tensorrt.build import build_serialized
from runtimes.tensorrt.plan import (
    BuildPlan,
    GraphTypes,
    Route,
    TensorRTOptions,
    has_dla,
    make_plan,
    optimisation_profile,
    parse_version,
)

ADAPTER = sorted(Path(trt_package.__file__).parent.glob("*.py"))  # every module of the adapter package
SURFACES = {release: load_surface("tensorrt", release) for release in TRT_RELEASES}
CUDA_SURFACES = {release: load_surface("cuda", release) for release in CUDA_RELEASES}
FP32, FP16, QDQ = GraphTypes(False, False), GraphTypes(True, False), GraphTypes(False, True)


# ---------------------------------------------------------------- 1. the stand-ins are the releases

def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_standin_has_exactly_the_release_surface(release):
    surface, trt = SURFACES[release], make_tensorrt(release)
    classes = surface["classes"]
    expected = {n for n in classes if "." not in n} | set(surface["functions"]) | set(surface["values"])
    assert _public(trt.__dict__) == _public(expected)
    for name, entry in classes.items():
        cls = type.__getattribute__(trt.__dict__[name.split(".")[0]], name.split(".")[1]) if "." in name \
            else trt.__dict__[name]
        own = _public(vars(cls))
        if entry["kind"] == "enum":
            members = type.__getattribute__(cls, "__members__")
            assert {k: v.value for k, v in members.items()} == entry["members"], name
            assert own == set(entry["members"]), name
            continue
        declared = set(entry["properties"]) | set(entry["methods"]) | set(entry.get("values", {})) | set(
            entry.get("nested", {}))
        assert own == _public(declared), name
        for prop, spec in entry["properties"].items():
            assert (vars(cls)[prop].fset is not None) == spec["settable"], f"{name}.{prop}"


@pytest.mark.parametrize("release", CUDA_RELEASES)
def test_cuda_standin_has_the_release_functions_and_codes(release):
    surface, cudart = CUDA_SURFACES[release], CudaRuntime(release, CudaMachine())
    functions = {n for n in vars(cudart) if n.startswith("cuda") and callable(getattr(cudart, n))
                 and not isinstance(getattr(cudart, n), type)}
    assert functions == set(surface["functions"])
    for name in ("cudaError_t", "cudaMemcpyKind"):
        assert {m.name: m.value for m in getattr(cudart, name)} == surface["types"][name]["members"]


# ---------------------------------------------------------------- 2. facts the adapter relies on

def _members(release: str, enum: str) -> dict[str, int]:
    return SURFACES[release]["classes"][enum]["members"]


@pytest.mark.parametrize("release", TRT_RELEASES)
def test_release_facts(release):
    classes, v11 = SURFACES[release]["classes"], version_key(release) >= (11,)
    flags, creation = _members(release, "BuilderFlag"), _members(release, "NetworkDefinitionCreationFlag")
    # Weak typing is gone in 11: no precision flags, no layer precision; TF32 and GPU_FALLBACK stay.
    weak = {"FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
    assert (weak & set(flags) == set()) is v11 and {"TF32", "GPU_FALLBACK"} <= set(flags)
    assert ({"precision", "set_output_type"} & (set(classes["ILayer"]["properties"]) |
                                                set(classes["ILayer"]["methods"])) == set()) is v11
    assert creation["STRONGLY_TYPED"] == (0 if v11 else 1) and ("EXPLICIT_BATCH" in creation) is not v11
    # The 11.0-11.4.0 bindings still expose DLA; only the version says it is absent (the adapter's gate).
    assert "DLA" in _members(release, "DeviceType") and "num_DLA_cores" in classes["Builder"]["properties"]
    config = classes["IBuilderConfig"]["methods"]
    assert config["create_timing_cache"][0].endswith("-> ITimingCache")
    assert "ignore_mismatch: bool) -> bool" in config["set_timing_cache"][0]
    assert "execute_async_v3" in classes["IExecutionContext"]["methods"]


@pytest.mark.parametrize("release", CUDA_RELEASES)
def test_cuda_release_facts(release):
    surface = CUDA_SURFACES[release]
    returns = {name: [r["name"] for r in entry["returns"]] for name, entry in surface["functions"].items()}
    assert returns["cudaMalloc"] == ["cudaError_t", "devPtr"] and returns["cudaStreamCreate"] == ["cudaError_t",
                                                                                                    "pStream"]
    assert returns["cudaMemcpyAsync"] == returns["cudaFree"] == returns["cudaSetDevice"] == ["cudaError_t"]
    assert {"name", "major", "minor"} <= set(surface["types"]["cudaDeviceProp"]["attributes"])
    old_layout = release.startswith("cuda-python-12.2")
    # import_cudart tries cuda.bindings.runtime (cuda-python >= 12.6) first, then the old cuda.cudart.
    assert ("cuda.bindings.runtime" in surface["layouts"]) is not old_layout
    assert set(surface["layouts"]) <= {"cuda.bindings.runtime", "cuda.cudart"} and surface["layouts"]
    assert ("raises" in surface["without_driver"]["cudaGetDeviceCount"]) is old_layout


# ---------------------------------------------------------------- 3. every route on every release it is used on

ROUTES = {
    # route: (releases it runs on, precision, graph kind, build options)
    "strong": (TRT_RELEASES, "fp16", "fp16", {}),
    "flags": (trt_cases.TRT10, "fp16", "fp32", {}),
    "qdq-int8": (TRT_RELEASES, "int8", "qdq", {}),
    "dla": ([r for r in TRT_RELEASES if has_dla(parse_version(r))], "fp16", "fp32", {"dla_core": 0}),
    "runner": (TRT_RELEASES, "fp32", "fp32", {"workspace_mib": 64}),
}
GRAPHS = {"fp32": trt_cases.fp32_graph, "fp16": trt_cases.fp16_graph, "qdq": trt_cases.qdq_graph}
RUNS = [(route, release) for route, (releases, *_) in ROUTES.items() for release in releases]


def _run_route(route: str, release: str, folder: Path) -> trt_cases.Machine:
    _, precision, graph, extra = ROUTES[route]
    batch = (2,) if "dla_core" in extra else (1, 4)
    options = BuildOptions(precision=precision, batch=batch, runtime=TensorRTOptions(
        engine_cache=False, cache_dir=str(folder / "cache"), **extra))
    source = ModelSource([trt_cases.SPEC], [trt_cases.OUTPUT], onnx_path=GRAPHS[graph](folder / "model.onnx"))
    with pytest.MonkeyPatch.context() as patch:
        machine = trt_cases.install(patch, release, dla_cores=1)
        backend = get_backend("tensorrt")
        backend.build(source, folder / "engine", options)
        if route == "runner":
            with backend.load(folder / "engine", "model.engine", options) as runner:
                runner.infer({"x": np.ones((3, 4, 8), np.float32)})
                # The per-layer profile (bench --profile): a second context with an IProfiler, the inspector.
                runner.profile_layers(ProfileRequest([{"x": np.ones((3, 4, 8), np.float32)}], runs=1, warmup=0))
        return machine


@pytest.fixture(scope="module")
def route_runs(tmp_path_factory) -> dict[tuple[str, str], trt_cases.Machine]:
    """Each route once on each of its releases (about 10 ms each); a failure is kept to be reported per test."""
    runs = {}
    for route, release in RUNS:
        try:
            runs[route, release] = _run_route(route, release, tmp_path_factory.mktemp(f"{route}-{release}"))
        except Exception as exc:  # reported by the test of that (route, release)
            runs[route, release] = exc
    return runs


def _declares(surface: dict, qualified: str) -> bool:
    """Whether `Class.attr` (the class an object reached had, its bases searched) exists in the surface."""
    owner, _, attr = qualified.rpartition(".")
    attr = attr.rstrip("=")
    classes, queue = surface["classes"], [owner]
    while queue:
        entry = classes.get(queue.pop(0))
        if entry is None:
            return False
        names = set(entry.get("members", {})) | set(entry.get("properties", {})) | set(entry.get("methods", {}))
        if attr in names | set(entry.get("values", {})) | set(entry.get("nested", {})):
            return True
        queue.extend(entry.get("bases", []))
    return False


def _exists(name: str, release: str, cuda: str) -> bool:
    root, _, rest = name.partition(".")
    if root == "cudart":
        return rest in CUDA_SURFACES[cuda]["functions"] or rest in CUDA_SURFACES[cuda]["types"]
    if root == "tensorrt":
        surface = SURFACES[release]
        return rest in surface["classes"] or rest in surface["functions"] or rest in surface["values"]
    return _declares(SURFACES[release], name)


@pytest.mark.parametrize(("route", "release"), RUNS)
def test_route_reaches_only_what_the_release_has(route_runs, route, release):
    machine = route_runs[route, release]
    if isinstance(machine, Exception):
        raise machine
    reached = machine.reached()
    missing = sorted(n for n in reached if not _exists(n, release, trt_cases.cuda_for(release)))
    assert missing == [], f"{route} on TensorRT {release} reached what it lacks"
    assert machine.state.errors() == [], f"{route} on TensorRT {release}: TensorRT logged errors"
    assert reached, "the route reached nothing: the stand-in was not the module the adapter used"


@pytest.mark.parametrize("release", trt_cases.TRT11)
def test_routes_11_cannot_take_are_refused_before_touching_tensorrt(monkeypatch, release):
    machine = trt_cases.install(monkeypatch, release, dla_cores=1)
    version = parse_version(release)
    with pytest.raises(RuntimeAdapterError, match="removed weak typing"):
        make_plan(version, BuildOptions(precision="fp16", runtime=TensorRTOptions(route="flags")), FP16,
                  [trt_cases.SPEC])
    with pytest.raises(RuntimeAdapterError, match="has no DLA"):
        make_plan(version, BuildOptions(precision="fp16", batch=(1,), runtime=TensorRTOptions(dla_core=0)), FP16,
                  [trt_cases.SPEC])
    assert machine.reached() == set()


@pytest.mark.parametrize("release", trt_cases.TRT11)
def test_the_flag_route_cannot_run_on_11(monkeypatch, tmp_path, release):
    """What the refusal above prevents: the flag route's calls do not exist in 11's bindings."""
    machine = trt_cases.install(monkeypatch, release)
    plan = BuildPlan(route=Route("flags", ("FP16",), True, "forced"), precision="fp16",
                     profile=optimisation_profile([trt_cases.SPEC], (1, 4)))
    with pytest.raises(AttributeError, match="has no attribute '(FP16|precision)'"):
        build_serialized(machine.trt, trt_cases.fp32_graph(tmp_path / "m.onnx"), plan, parse_version(release))


@pytest.mark.parametrize("release", trt_cases.TRT10)
def test_strongly_typed_10x_networks_refuse_layer_precision(monkeypatch, tmp_path, release):
    """STRONGLY_TYPED's docs: "Setting layer precision and layer output types is not allowed"."""
    machine = trt_cases.install(monkeypatch, release)
    trt, path = machine.trt, str(trt_cases.fp32_graph(tmp_path / "m.onnx"))
    for flags, refused in ((0, False), (1 << _members(release, "NetworkDefinitionCreationFlag")["STRONGLY_TYPED"],
                                        True)):
        network = trt.Builder(trt.Logger()).create_network(flags)
        assert trt.OnnxParser(network, trt.Logger()).parse_from_file(path)
        layer = network.get_layer(0)
        layer.precision = trt.float16
        layer.set_output_type(0, trt.float16)
        assert (layer.precision == trt.float16) is not refused
        assert (layer.get_output_type(0) is None) is refused
        assert bool(machine.state.errors()) is refused
        machine.state.log.clear()


@pytest.mark.parametrize("release", [TRT_RELEASES[0], TRT_RELEASES[-1]])
def test_standin_objects_behave_like_pybind11_objects(release):
    trt = make_tensorrt(release)
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(int(trt.BuilderFlag.TF32))  # an enum parameter refuses an int
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_timing_cache(None, False)  # a reference parameter refuses None
    with pytest.raises(AttributeError, match="no attribute 'fp16_mode'"):
        config.fp16_mode = True  # objects refuse attributes their class lacks
    with pytest.raises(AttributeError, match="has no setter"):
        trt.Builder(trt.Logger()).num_DLA_cores = 2
    with pytest.raises(TypeError, match="No constructor defined"):
        trt.ICudaEngine()
    assert config.create_timing_cache(b"garbage") is None and isinstance(config.create_timing_cache(b""),
                                                                         StandInObject)


# ---------------------------------------------------------------- 4. the routes cover the adapter's references

def _references(path: Path) -> set[str]:
    """`trt.X`, `trt.X.Y`, `getattr(trt.X, "Y")`, `cudart.X` and `self._cudart.X` in the adapter's source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[0], ast.Attribute) \
                and _root(node.args[0].value) == "trt":
            found.add(f"{node.args[0].attr}.{node.args[1].value}")
        if not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
            continue  # dunders (trt.__version__) are read by every route and never recorded
        root = _root(node.value)
        if root == "trt":
            found.add(f"tensorrt.{node.attr}")
        elif root in ("cudart", "self._cudart"):
            found.add(f"cudart.{node.attr}")
        elif isinstance(node.value, ast.Attribute) and _root(node.value.value) == "trt":
            found.add(f"{node.value.attr}.{node.attr}")
    return found


def _root(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def test_routes_reach_every_reference_in_the_adapter(route_runs):
    reached = set().union(*(m.reached() for m in route_runs.values() if not isinstance(m, Exception)))
    by_module = {path.name: _references(path) for path in ADAPTER}
    references = set().union(*by_module.values())
    assert {"tensorrt.Builder", "BuilderFlag.TF32", "cudart.cudaMemcpyAsync", "TensorIOMode.INPUT"} <= references
    assert sorted(references - reached) == []
    # The policy (plan) and the cache files stay plain Python; a TensorRT call there would be a call no route
    # without a GPU could be trusted to reach, so the split is part of the check.
    assert {name for name, found in by_module.items() if found} == {"backend.py", "build.py", "cuda.py", "runner.py"}


def test_cuda_python_releases_pair_with_tensorrt_releases():
    """Every cuda-python fixture serves some TensorRT release's routes, and 11 pairs with CUDA 13's bindings."""
    assert {trt_cases.cuda_for(r) for r in TRT_RELEASES} == set(CUDA_RELEASES)
    assert trt_cases.cuda_for(TRT_RELEASES[-1]).startswith("cuda-bindings-13")
