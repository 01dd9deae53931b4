"""A `tensorrt` module per real release, generated from its API surface, with behaviour where the tests need it.

`make_tensorrt("10.13.3.9", machine)` gives the surface of that release exactly (see standin_surface): its
classes, enum members and values (`NetworkDefinitionCreationFlag.STRONGLY_TYPED` is 1 in 10.x and 0 in 11),
properties and signatures; what it lacks is missing (`BuilderFlag.FP16`, `ILayer.precision` in 11). The
behaviours below are the documented behaviour of each call, named in each function's docstring, and no more:

* the ONNX parser reads the file with `onnx` and makes one layer per node, of the kind onnx-tensorrt imports
  it as; a node it has no importer for is a parser error;
* the builder checks what the docs say it checks (profiles for dynamic inputs, DLA's static shapes, the
  timing cache's device) and writes an "engine" that is the ONNX model behind a JSON header;
* the runtime refuses an engine of another release or GPU, and the execution context runs the ONNX model
  with onnxruntime on the bytes in the stand-in cuda runtime's memory, so what the runner copies in and out
  is checked against real numerics.

It builds nothing a GPU would run: it checks calls, not kernels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from standin_cuda import CudaMachine
from standin_surface import ModuleBuilder, StandInGap, load_surface, make_object, surface_names, version_key

TRT_RELEASES = surface_names("tensorrt")  # "10.0.1" ... "11.4.0.106"
ENGINE_MAGIC = b"STANDIN-TENSORRT-ENGINE\n"
CACHE_MAGIC = b"STANDIN-TIMING-CACHE\n"
# onnx-tensorrt's importers: the layer kind (LayerType member, ILayer subclass) each ONNX op becomes.
ONNX_LAYERS = {
    "Conv": ("CONVOLUTION", "IConvolutionLayer"), "MatMul": ("MATRIX_MULTIPLY", "IMatrixMultiplyLayer"),
    "Gemm": ("MATRIX_MULTIPLY", "IMatrixMultiplyLayer"), "Softmax": ("SOFTMAX", "ISoftMaxLayer"),
    "LayerNormalization": ("NORMALIZATION", "INormalizationLayer"), "ReduceMean": ("REDUCE", "IReduceLayer"),
    "ReduceSum": ("REDUCE", "IReduceLayer"), "ReduceMax": ("REDUCE", "IReduceLayer"),
    "Relu": ("ACTIVATION", "IActivationLayer"), "Sigmoid": ("ACTIVATION", "IActivationLayer"),
    "Add": ("ELEMENTWISE", "IElementWiseLayer"), "Mul": ("ELEMENTWISE", "IElementWiseLayer"),
    "Sub": ("ELEMENTWISE", "IElementWiseLayer"), "Div": ("ELEMENTWISE", "IElementWiseLayer"),
    "QuantizeLinear": ("QUANTIZE", "IQuantizeLayer"), "DequantizeLinear": ("DEQUANTIZE", "IDequantizeLayer"),
    "Reshape": ("SHUFFLE", "IShuffleLayer"), "Transpose": ("SHUFFLE", "IShuffleLayer"),
    "Flatten": ("SHUFFLE", "IShuffleLayer"), "Cast": ("CAST", "ICastLayer"), "Identity": ("IDENTITY", "IIdentityLayer"),
    "MaxPool": ("POOLING", "IPoolingLayer"), "AveragePool": ("POOLING", "IPoolingLayer"),
    "Sqrt": ("UNARY", "IUnaryLayer"), "Erf": ("UNARY", "IUnaryLayer"), "Exp": ("UNARY", "IUnaryLayer"),
}
ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "BOOL": np.bool_, "UINT8": np.uint8}


@dataclass
class TrtMachine:
    """One machine: its TensorRT release, GPU (through the cuda stand-in), DLA cores, and what was logged."""

    release: str
    cuda: CudaMachine = field(default_factory=CudaMachine)
    dla_cores: int = 0
    log: list[tuple[str, str]] = field(default_factory=list)  # (severity, message), as a logger receives them
    builds: list[dict[str, Any]] = field(default_factory=list)  # each engine header the builder wrote
    trt: Any = None
    last_network: Any = None  # the objects the last create_network / create_builder_config handed out
    last_config: Any = None

    @property
    def version(self) -> tuple[int, ...]:
        return version_key(self.release)

    def gpu(self) -> dict[str, str]:
        gpu = self.cuda.gpus[self.cuda.current]
        return {"gpu": gpu.name, "compute_capability": f"{gpu.major}.{gpu.minor}", "tensorrt": self.release}

    def report(self, severity: str, message: str) -> None:
        self.log.append((severity, message))

    def errors(self) -> list[str]:
        return [message for severity, message in self.log if severity in ("ERROR", "INTERNAL_ERROR")]

    def member(self, enum: str, name: str) -> Any:
        """An enum member, read without recording it as reached (the stand-in's reads are not the adapter's)."""
        return type.__getattribute__(self.trt.__dict__[enum], name)

    def members(self, enum: str) -> dict[str, Any]:
        return type.__getattribute__(self.trt.__dict__[enum], "__members__")


def make_tensorrt(release: str, machine: TrtMachine | None = None) -> Any:
    """The stand-in `tensorrt` module of `release` (a name in TRT_RELEASES) on `machine`."""
    machine = machine or TrtMachine(release)
    builder = ModuleBuilder(load_surface("tensorrt", release), "tensorrt", BEHAVIOURS, machine)
    module = builder.build()
    machine.trt = module
    # IHostMemory exposes the buffer protocol (its docstring); a Python class on 3.11 can offer bytes() only.
    type.__setattr__(module.__dict__["IHostMemory"], "__bytes__", lambda self: self._state["data"])
    return module


def _obj(m: TrtMachine, cls: str, **state: Any) -> Any:
    return make_object(m.trt.__dict__[cls], **state)


def _host_memory(m: TrtMachine, data: bytes) -> Any:
    return _obj(m, "IHostMemory", data=data, nbytes=len(data), dtype=m.member("DataType", "UINT8"))


def _dims(m: TrtMachine, shape: Any) -> Any:
    return _obj(m, "Dims", values=[int(v) for v in shape])


# ---------------------------------------------------------------- logger, builder, network

def logger_init(this: Any, m: TrtMachine, min_severity: Any = None) -> None:
    """Logger(min_severity): TensorRT's default logger, printing messages at or above the severity."""
    this._state["min_severity"] = min_severity


def builder_init(this: Any, m: TrtMachine, logger: Any) -> None:
    this._state["logger"] = logger


def create_network(this: Any, m: TrtMachine, flags: int = 0) -> Any:
    """create_network(flags): flags is a bitset of `1 << int(NetworkDefinitionCreationFlag.X)`.

    Strongly typed when STRONGLY_TYPED is set (10.x) or always (11: "Strongly typed mode is always enabled.
    This flag is retained for API compatibility but is ignored")."""
    members = m.members("NetworkDefinitionCreationFlag")
    names = {name for name, member in members.items() if int(flags) & (1 << member.value)}
    unknown = int(flags) & ~sum(1 << member.value for member in members.values())
    if unknown:
        raise StandInGap(f"create_network: bits {unknown:#x} name no NetworkDefinitionCreationFlag of {m.release}")
    strong = m.version >= (11,) or "STRONGLY_TYPED" in names
    m.last_network = _obj(m, "INetworkDefinition", flags=names, strongly_typed=strong, layers=[], inputs=[],
                          outputs=[], onnx=None)
    return m.last_network


def network_layer(this: Any, m: TrtMachine, index: int) -> Any:
    return this._state["layers"][index]


def network_input(this: Any, m: TrtMachine, index: int) -> Any:
    return this._state["inputs"][index]


def network_output(this: Any, m: TrtMachine, index: int) -> Any:
    return this._state["outputs"][index]


def layer_precision_set(this: Any, m: TrtMachine, value: Any) -> None:
    """ILayer.precision: "in a weakly-typed network" only; STRONGLY_TYPED's docs: "Setting layer precision and
    layer output types is not allowed". The C++ setter is noexcept: misuse is reported to the logger."""
    if this._state["network"]._state["strongly_typed"]:
        m.report("ERROR", f"ILayer::setPrecision: {this._state['name']}: not allowed in a strongly typed network")
        return
    this._state["precision"] = value


def layer_set_output_type(this: Any, m: TrtMachine, index: int, dtype: Any) -> None:
    """ILayer.set_output_type: as `precision`, not allowed in a strongly typed network."""
    if this._state["network"]._state["strongly_typed"]:
        m.report("ERROR", f"ILayer::setOutputType: {this._state['name']}: not allowed in a strongly typed network")
        return
    if not 0 <= index < this._state["num_outputs"]:
        m.report("ERROR", f"ILayer::setOutputType: index {index} out of range")
        return
    this._state["output_types"][index] = dtype


# ---------------------------------------------------------------- ONNX parser

def parser_init(this: Any, m: TrtMachine, network: Any, logger: Any) -> None:
    this._state.update(network=network, logger=logger, errors=[])


def parse_from_file(this: Any, m: TrtMachine, model: str) -> bool:
    """parse_from_file(model): parse the ONNX file (external data beside it); errors via get_error(i)."""
    import onnx

    try:
        proto = onnx.load(model)
        onnx.checker.check_model(proto)
    except Exception as exc:  # what the parser reports: the file is not a valid model
        this._state["errors"].append(_obj(m, "ParserError", desc=f"Failed to parse ONNX model: {exc}", node=-1))
        return False
    network = this._state["network"]
    for index, node in enumerate(proto.graph.node):
        if node.op_type not in ONNX_LAYERS:
            this._state["errors"].append(_obj(m, "ParserError", node=index,
                                              desc=f"No importer registered for op: {node.op_type}"))
            continue
        kind, cls = ONNX_LAYERS[node.op_type]
        cls = cls if cls in m.trt.__dict__ else "ILayer"  # a release without that subclass
        network._state["layers"].append(_obj(m, cls, name=node.name or f"{node.op_type}_{index}",
                                             type=m.member("LayerType", kind), num_outputs=len(node.output),
                                             network=network, output_types={}, precision=m.member("DataType", "FLOAT")))
    initialised = {t.name for t in proto.graph.initializer}
    network._state["inputs"] = [_tensor(m, v) for v in proto.graph.input if v.name not in initialised]
    network._state["outputs"] = [_tensor(m, v) for v in proto.graph.output]
    network._state["onnx"] = proto.SerializeToString()
    return not this._state["errors"]


def _tensor(m: TrtMachine, value: Any) -> Any:
    kind = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
    return _obj(m, "ITensor", name=value.name, shape=_dims(m, shape),
                dtype=m.member("DataType", ONNX_DTYPES.get(kind.elem_type, "FLOAT")))


def parser_error_str(this: Any, m: TrtMachine) -> str:
    """str(ParserError): the error's description, with the node it is about."""
    return f"In node {this._state['node']}: {this._state['desc']}"


# ---------------------------------------------------------------- builder config, profile, timing cache

def create_builder_config(this: Any, m: TrtMachine) -> Any:
    """TF32 is "Enabled by default" (BuilderFlag.TF32's docs); the default device is the GPU."""
    flags = {"TF32"} if "TF32" in m.members("BuilderFlag") else set()
    m.last_config = _obj(m, "IBuilderConfig", flags=flags, pools={}, profiles=[], timing_cache=None,
                         default_device_type=m.member("DeviceType", "GPU"), DLA_core=-1)
    return m.last_config


def config_set_flag(this: Any, m: TrtMachine, flag: Any) -> None:
    this._state["flags"].add(flag.name)


def config_clear_flag(this: Any, m: TrtMachine, flag: Any) -> None:
    this._state["flags"].discard(flag.name)


def config_get_flag(this: Any, m: TrtMachine, flag: Any) -> bool:
    return flag.name in this._state["flags"]


def config_pool_limit(this: Any, m: TrtMachine, pool: Any, pool_size: int) -> None:
    this._state["pools"][pool.name] = int(pool_size)


def config_add_profile(this: Any, m: TrtMachine, profile: Any) -> int:
    this._state["profiles"].append(profile)
    return len(this._state["profiles"]) - 1


def create_profile(this: Any, m: TrtMachine) -> Any:
    return _obj(m, "IOptimizationProfile", shapes={})


def profile_set_shape(this: Any, m: TrtMachine, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
    """set_shape: "len(min) == len(opt) == len(max)" and "0 <= min[i] <= opt[i] <= max[i]", else ValueError."""
    low, mid, high = (tuple(_values(d)) for d in (min, opt, max))
    consistent = len(low) == len(mid) == len(high) and all(
        0 <= a <= b <= c for a, b, c in zip(low, mid, high, strict=True))
    if not consistent:
        raise ValueError(f"set_shape({input!r}): inconsistent min/opt/max {low} {mid} {high}")
    this._state["shapes"][input] = (low, mid, high)


def _values(dims: Any) -> list[int]:
    return list(dims._state["values"]) if hasattr(dims, "_state") else [int(v) for v in dims]


def create_timing_cache(this: Any, m: TrtMachine, serialized_timing_cache: Any) -> Any:
    """An empty buffer makes a new cache. Data the library cannot deserialize gives nullptr, which the bindings
    return as None (TensorRT-LLM's builder checks for exactly this before set_timing_cache)."""
    data = bytes(serialized_timing_cache)
    if not data:
        return _obj(m, "ITimingCache", origin=m.gpu(), entries=0)
    if not data.startswith(CACHE_MAGIC):
        return None
    try:
        saved = json.loads(data[len(CACHE_MAGIC):])
    except ValueError:
        return None
    return _obj(m, "ITimingCache", origin=saved["origin"], entries=saved["entries"])


def set_timing_cache(this: Any, m: TrtMachine, cache: Any, ignore_mismatch: Any) -> bool:
    """"A failure will be reported if the CUDA device property in the provided cache is different from current
    environment"; ignore_mismatch=True skips that check. Returns whether the cache was attached."""
    if cache._state["origin"] != m.gpu() and not ignore_mismatch:
        m.report("WARNING", "timing cache was created on another device or TensorRT version; not attached")
        return False
    this._state["timing_cache"] = cache
    return True


def get_timing_cache(this: Any, m: TrtMachine) -> Any:
    return this._state["timing_cache"]


def timing_cache_serialize(this: Any, m: TrtMachine) -> Any:
    data = CACHE_MAGIC + json.dumps({"origin": this._state["origin"], "entries": this._state["entries"]}).encode()
    return _host_memory(m, data)


# ---------------------------------------------------------------- building

def build_serialized_network(this: Any, m: TrtMachine, network: Any, config: Any, kernel_text: Any = None) -> Any:
    """The serialized engine, or None with the reason logged as an error (the builder returns nullptr)."""
    state, inputs = config._state, network._state["inputs"]
    if network._state["onnx"] is None:
        m.report("ERROR", "network has no layers")
        return None
    profile = _profile(m, network, state["profiles"])
    if profile is None:
        return None
    devices = _devices(m, network, config, profile)
    if devices is None:
        return None
    if state["timing_cache"] is not None:  # the builder adds the tactics it timed to an attached cache
        state["timing_cache"]._state["entries"] += len(network._state["layers"])
    io = [{"name": t._state["name"], "mode": "INPUT", "dtype": t._state["dtype"].name,
           "shape": _values(t._state["shape"])} for t in inputs]
    io += [{"name": t._state["name"], "mode": "OUTPUT", "dtype": t._state["dtype"].name,
            "shape": _values(t._state["shape"])} for t in network._state["outputs"]]
    header = {**m.gpu(), "io": io, "profile": {k: [list(s) for s in v] for k, v in profile.items()},
              "devices": devices, "flags": sorted(state["flags"]), "strongly_typed": network._state["strongly_typed"],
              "dla_core": state["DLA_core"] if devices and "DLA" in devices.values() else None}
    m.builds.append(header)
    return _host_memory(m, ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + network._state["onnx"])


def _profile(m: TrtMachine, network: Any, profiles: list[Any]) -> dict[str, tuple] | None:
    """set_shape's docs: a profile must cover every input with dynamic dims, and fixed dims must match."""
    dynamic = [t for t in network._state["inputs"] if -1 in _values(t._state["shape"])]
    if dynamic and not profiles:
        m.report("ERROR", "Network has dynamic or shape inputs, but no optimization profile has been defined.")
        return None
    shapes = profiles[0]._state["shapes"] if profiles else {}
    for tensor in network._state["inputs"]:
        name, real = tensor._state["name"], _values(tensor._state["shape"])
        if name not in shapes:
            if -1 in real:
                m.report("ERROR", f"optimization profile is missing values for input {name!r}")
                return None
            continue
        for dims in shapes[name]:
            if len(dims) != len(real) or any(r != -1 and r != d for r, d in zip(real, dims, strict=True)):
                m.report("ERROR", f"profile shape {dims} of {name!r} does not fit its network shape {real}")
                return None
    return {name: tuple(s) for name, s in shapes.items()}


def _devices(m: TrtMachine, network: Any, config: Any, profile: dict[str, tuple]) -> dict[str, str] | None:
    """Layer -> device. NVIDIA's DLA restrictions: DLA runs static shapes only (min = opt = max); a layer DLA
    cannot run goes to the GPU with GPU_FALLBACK, and fails the build without it."""
    layers = [layer._state["name"] for layer in network._state["layers"]]
    if config._state["default_device_type"].name != "DLA":
        return dict.fromkeys(layers, "GPU")
    core = config._state["DLA_core"]
    if not 0 <= core < m.dla_cores:
        m.report("ERROR", f"DLA core {core} requested; this device has {m.dla_cores} DLA core(s)")
        return None
    static = all(low == high for low, _, high in profile.values())
    if static:
        return dict.fromkeys(layers, "DLA")
    if "GPU_FALLBACK" not in config._state["flags"]:
        m.report("ERROR", "DLA does not support dynamic shapes (min != max) and GPU fallback is off")
        return None
    for layer in layers:
        m.report("WARNING", f"{layer}: DLA does not support dynamic shapes; falls back to the GPU")
    return dict.fromkeys(layers, "GPU")


# ---------------------------------------------------------------- runtime, engine, execution context

def runtime_init(this: Any, m: TrtMachine, logger: Any) -> None:
    this._state.update(logger=logger, DLA_core=-1)


def deserialize_cuda_engine(this: Any, m: TrtMachine, serialized_engine: Any) -> Any:
    """"The ICudaEngine, or None if it could not be deserialized": not an engine, or one built by another
    TensorRT release or for another GPU (engines are not portable across either)."""
    data = bytes(serialized_engine)
    if not data.startswith(ENGINE_MAGIC):
        m.report("ERROR", "the serialized engine is corrupt")
        return None
    head, _, onnx_bytes = data[len(ENGINE_MAGIC):].partition(b"\n")
    header = json.loads(head)
    if {k: header[k] for k in ("gpu", "compute_capability", "tensorrt")} != m.gpu():
        m.report("ERROR", "the engine was built by another TensorRT release or for another GPU")
        return None
    return _obj(m, "ICudaEngine", header=header, onnx=onnx_bytes, io={t["name"]: t for t in header["io"]},
                runtime=this, session=None)


def engine_num_io(this: Any, m: TrtMachine) -> int:
    return len(this._state["header"]["io"])


def engine_tensor_name(this: Any, m: TrtMachine, index: int) -> str:
    return this._state["header"]["io"][index]["name"]


def engine_tensor_dtype(this: Any, m: TrtMachine, name: str) -> Any:
    return m.member("DataType", this._state["io"][name]["dtype"])


def engine_tensor_mode(this: Any, m: TrtMachine, name: str) -> Any:
    return m.member("TensorIOMode", this._state["io"][name]["mode"])


def engine_tensor_shape(this: Any, m: TrtMachine, name: str) -> Any:
    return _dims(m, this._state["io"][name]["shape"])


def create_execution_context(this: Any, m: TrtMachine, **_: Any) -> Any:
    return _obj(m, "IExecutionContext", engine=this, shapes={}, addresses={})


def context_set_input_shape(this: Any, m: TrtMachine, name: str, shape: Any) -> bool:
    """False (with an error logged) for a shape outside the engine's profile, or a tensor that is no input."""
    engine = this._state["engine"]._state
    values = tuple(_values(shape))
    if engine["io"].get(name, {}).get("mode") != "INPUT":
        m.report("ERROR", f"set_input_shape: {name!r} is not an input tensor")
        return False
    low, _, high = engine["header"]["profile"][name]
    if len(values) != len(low) or not all(a <= v <= b for v, a, b in zip(values, low, high, strict=True)):
        m.report("ERROR", f"set_input_shape: {values} of {name!r} is outside the profile {low}..{high}")
        return False
    this._state["shapes"][name] = values
    return True


def context_tensor_shape(this: Any, m: TrtMachine, name: str) -> Any:
    """An input's set shape; an output's shape follows the inputs' (-1 while an input shape is unset)."""
    engine = this._state["engine"]._state
    tensor = engine["io"][name]
    if tensor["mode"] == "INPUT":
        return _dims(m, this._state["shapes"].get(name, tensor["shape"]))
    batch = next(iter(this._state["shapes"].values()), (-1,))[0]
    return _dims(m, [batch if d == -1 else d for d in tensor["shape"]])


def context_set_address(this: Any, m: TrtMachine, name: str, memory: int) -> bool:
    this._state["addresses"][name] = int(memory)
    return True


def execute_async_v3(this: Any, m: TrtMachine, stream_handle: int) -> bool:
    """Enqueue inference on the stream: every input shape and every IO address must be set, and each address
    must hold its tensor (else an error and False). Runs the engine's ONNX model with onnxruntime."""
    import ctypes

    engine = this._state["engine"]._state
    handle = int(stream_handle)
    if handle and handle not in m.cuda.streams:
        m.report("ERROR", "execute_async_v3: invalid CUDA stream")
        return False
    feeds, outputs = {}, []
    for tensor in engine["header"]["io"]:
        name, dtype = tensor["name"], NUMPY_DTYPES[tensor["dtype"]]
        shape = tuple(_values(context_tensor_shape(this, m, name)))
        address = this._state["addresses"].get(name)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if -1 in shape or address is None or not m.cuda.region(address, nbytes):
            m.report("ERROR", f"execute_async_v3: {name!r} has no shape, no address or too small a buffer")
            return False
        if tensor["mode"] == "INPUT":
            feeds[name] = np.frombuffer(ctypes.string_at(address, nbytes), dtype=dtype).reshape(shape)
        else:
            outputs.append((name, address, dtype))
    if engine["session"] is None:
        import onnxruntime

        engine["session"] = onnxruntime.InferenceSession(engine["onnx"], providers=["CPUExecutionProvider"])
    results = engine["session"].run([name for name, _, _ in outputs], feeds)
    _report_layer_times(m, this)
    for (_name, address, dtype), result in zip(outputs, results, strict=True):
        data = np.ascontiguousarray(result, dtype=dtype).tobytes()
        ctypes.memmove(address, data, len(data))
    return True


def _report_layer_times(m: TrtMachine, this: Any) -> None:
    """With `IExecutionContext.profiler` set, each execution reports every layer's time to the profiler
    ("report_layer_time is called once per layer for each invocation"); here one layer per ONNX node."""
    profiler = this._state.get("profiler")
    if profiler is None:
        return
    for layer in _engine_layers(this._state["engine"]):
        profiler.report_layer_time(layer["Name"], 0.01)


def _engine_layers(engine: Any) -> list[dict[str, str]]:
    import onnx

    graph = onnx.load_from_string(engine._state["onnx"]).graph
    return [{"Name": node.name, "LayerType": ONNX_LAYERS.get(node.op_type, ("PLUGIN", ""))[0],
             "Metadata": f"[ONNX Layer: {node.name}]"} for node in graph.node]


def create_engine_inspector(this: Any, m: TrtMachine) -> Any:
    return _obj(m, "EngineInspector", engine=this)


def inspector_engine_information(this: Any, m: TrtMachine, format: Any) -> str:  # noqa: A002
    """The engine's layers as JSON ({"Layers": [...]}); names, types and ONNX metadata are only in an engine built
    with ProfilingVerbosity.DETAILED, which the stand-in builder does not distinguish."""
    if format.name != "JSON":
        return "\n".join(layer["Name"] for layer in _engine_layers(this._state["engine"]))
    return json.dumps({"Layers": _engine_layers(this._state["engine"])})


# ---------------------------------------------------------------- small values

def dims_init(this: Any, m: TrtMachine, shape: Any = None) -> None:
    this._state["values"] = [int(v) for v in shape or []]


def dims_getitem(this: Any, m: TrtMachine, arg0: Any) -> Any:
    values = this._state["values"]
    return tuple(values[arg0]) if isinstance(arg0, slice) else values[arg0]  # IndexError past the end


def nptype(m: TrtMachine, trt_type: Any) -> type:
    """tensorrt.nptype (the package's __init__): the numpy type of a DataType, TypeError for one without."""
    if trt_type.name not in NUMPY_DTYPES:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return NUMPY_DTYPES[trt_type.name]


def _state_writer(key: str) -> Any:
    def write(this: Any, m: TrtMachine, value: Any) -> None:
        this._state[key] = value

    return write


BEHAVIOURS: dict[str, Any] = {
    "Logger.__init__": logger_init, "Builder.__init__": builder_init, "Builder.create_network": create_network,
    "Builder.create_builder_config": create_builder_config, "Builder.create_optimization_profile": create_profile,
    "Builder.build_serialized_network": build_serialized_network,
    "Builder.num_DLA_cores": lambda this, m: m.dla_cores, "Runtime.num_DLA_cores": lambda this, m: m.dla_cores,
    "INetworkDefinition.num_layers": lambda this, m: len(this._state["layers"]),
    "INetworkDefinition.get_layer": network_layer, "INetworkDefinition.get_input": network_input,
    "INetworkDefinition.get_output": network_output,
    "INetworkDefinition.num_inputs": lambda this, m: len(this._state["inputs"]),
    "INetworkDefinition.num_outputs": lambda this, m: len(this._state["outputs"]),
    "ILayer.name=": _state_writer("name"), "ILayer.precision=": layer_precision_set,
    "ILayer.set_output_type": layer_set_output_type,
    "ILayer.get_output_type": lambda this, m, index: this._state["output_types"].get(index),
    "OnnxParser.__init__": parser_init, "OnnxParser.parse_from_file": parse_from_file,
    "OnnxParser.num_errors": lambda this, m: len(this._state["errors"]),
    "OnnxParser.get_error": lambda this, m, index: this._state["errors"][index],
    "ParserError.__str__": parser_error_str, "ParserError.__repr__": parser_error_str,
    "ParserError.desc": lambda this, m: this._state["desc"], "ParserError.node": lambda this, m: this._state["node"],
    "IBuilderConfig.set_flag": config_set_flag, "IBuilderConfig.clear_flag": config_clear_flag,
    "IBuilderConfig.get_flag": config_get_flag, "IBuilderConfig.set_memory_pool_limit": config_pool_limit,
    "IBuilderConfig.add_optimization_profile": config_add_profile,
    "IBuilderConfig.default_device_type=": _state_writer("default_device_type"),
    "IBuilderConfig.DLA_core=": _state_writer("DLA_core"),
    "IBuilderConfig.create_timing_cache": create_timing_cache, "IBuilderConfig.set_timing_cache": set_timing_cache,
    "IBuilderConfig.get_timing_cache": get_timing_cache, "ITimingCache.serialize": timing_cache_serialize,
    "IOptimizationProfile.set_shape": profile_set_shape,
    "Runtime.__init__": runtime_init, "Runtime.DLA_core=": _state_writer("DLA_core"),
    "Runtime.deserialize_cuda_engine": deserialize_cuda_engine,
    "ICudaEngine.num_io_tensors": engine_num_io, "ICudaEngine.get_tensor_name": engine_tensor_name,
    "ICudaEngine.get_tensor_dtype": engine_tensor_dtype, "ICudaEngine.get_tensor_mode": engine_tensor_mode,
    "ICudaEngine.get_tensor_shape": engine_tensor_shape,
    "ICudaEngine.create_execution_context": create_execution_context,
    "IExecutionContext.set_input_shape": context_set_input_shape,
    "IExecutionContext.get_tensor_shape": context_tensor_shape,
    "IExecutionContext.set_tensor_address": context_set_address, "IExecutionContext.execute_async_v3": execute_async_v3,
    "Dims.__init__": dims_init, "Dims.__len__": lambda this, m: len(this._state["values"]),
    "Dims.__getitem__": dims_getitem, "Dims.__repr__": lambda this, m: str(tuple(this._state["values"])),
    "Dims.__str__": lambda this, m: str(tuple(this._state["values"])),
    "Dims.__eq__": lambda this, m, arg0: list(this._state["values"]) == list(arg0),
    "nptype": nptype,
    "IProfiler.__init__": lambda this, m: None, "IExecutionContext.profiler=": _state_writer("profiler"),
    "ICudaEngine.create_engine_inspector": create_engine_inspector,
    "EngineInspector.get_engine_information": inspector_engine_information,
}

