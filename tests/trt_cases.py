"""What the TensorRT tests share: tiny hand-made ONNX graphs for each route, and a stand-in machine to run on.

The graphs are built with onnx.helper (IR 8, opset 17, which onnxruntime 1.20+ runs), small enough to parse
and run in milliseconds: an fp32 graph with the layers the flag route pins (LayerNormalization, Softmax,
ReduceMean), an fp16 graph with fp32 islands, and a Q/DQ int8 graph (the explicit-quantization route).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from standin_cuda import CUDA_RELEASES, CudaMachine, CudaRuntime, Gpu
from standin_surface import version_key
from standin_tensorrt import TRT_RELEASES, TrtMachine, make_tensorrt

from runtimes import TensorSpec

SPEC = TensorSpec("x", ("batch", 4, 8))
OUTPUT = "y"
TRT10 = [r for r in TRT_RELEASES if version_key(r) < (11,)]
TRT11 = [r for r in TRT_RELEASES if version_key(r) >= (11,)]


def cuda_for(release: str) -> str:
    """The cuda-python a TensorRT release ships beside: cuda-python 12.2 (JetPack 6) for 10.0-10.3, the newest
    CUDA 12 bindings for the rest of 10.x, CUDA 13's for 11."""
    major, minor = version_key(release)[:2]
    if (major, minor) < (10, 12):
        wanted = "cuda-python-12"
    else:
        wanted = "cuda-bindings-12" if major == 10 else "cuda-bindings-13"
    return next(r for r in reversed(CUDA_RELEASES) if r.startswith(wanted))


def _model(nodes: list, inputs: list, outputs: list, initializers: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ln_s": 1 + 0.1 * rng.standard_normal(8).astype(np.float32),
            "ln_b": 0.1 * rng.standard_normal(8).astype(np.float32),
            "w": rng.standard_normal((8, 8)).astype(np.float32)}


def fp32_graph(path: Path) -> Path:
    """LayerNorm -> MatMul -> Softmax -> mean over tokens: [batch, 4, 8] -> [batch, 8]."""
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["n"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["n", "w"], ["q"], name="qk"),
             helper.make_node("Softmax", ["q"], ["a"], axis=-1, name="attn"),
             helper.make_node("ReduceMean", ["a"], [OUTPUT], axes=[1], keepdims=0, name="mean")]
    weights = [numpy_helper.from_array(v, k) for k, v in _weights().items()]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                   [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 8])], weights)
    onnx.save(model, path)
    return path


def reference(x: np.ndarray) -> np.ndarray:
    """fp32_graph in numpy: what the engine must return."""
    w = _weights()
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    q = ((x - mean) / np.sqrt(var + 1e-5) * w["ln_s"] + w["ln_b"]) @ w["w"]
    a = np.exp(q - q.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)).mean(1)


def fp16_graph(path: Path) -> Path:
    """fp16 tensors with an fp32 island: Cast -> MatMul (fp16) -> Cast -> Softmax (fp32)."""
    w = numpy_helper.from_array(_weights()["w"].astype(np.float16), "w16")
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="to16"),
             helper.make_node("MatMul", ["h", "w16"], ["q16"], name="qk"),
             helper.make_node("Cast", ["q16"], ["q"], to=TensorProto.FLOAT, name="to32"),
             helper.make_node("Softmax", ["q"], [OUTPUT], axis=-1, name="attn")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                   [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 4, 8])], [w])
    onnx.save(model, path)
    return path


def qdq_graph(path: Path) -> Path:
    """Explicit quantization: QuantizeLinear/DequantizeLinear (int8) in front of a MatMul."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zero"),
             numpy_helper.from_array(_weights()["w"], "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], name="quant"),
             helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xd"], name="dequant"),
             helper.make_node("MatMul", ["xd", "w"], [OUTPUT], name="qk")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                   [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 4, 8])], inits)
    onnx.save(model, path)
    return path


def unsupported_graph(path: Path) -> Path:
    """A node the stand-in parser (like onnx-tensorrt without a plugin) has no importer for."""
    nodes = [helper.make_node("Celu", ["x"], [OUTPUT], name="celu")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                   [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 4, 8])], [])
    onnx.save(model, path)
    return path


@dataclass
class Machine:
    """A stand-in TensorRT release and cuda runtime installed as `tensorrt` and the adapter's cudart."""

    trt: Any
    cudart: CudaRuntime
    state: TrtMachine

    def reached(self) -> set[str]:
        return set(self.trt._standin_reached) | set(self.cudart._standin_reached)


def install(monkeypatch: Any, release: str, cuda: str | None = None, gpus: list[Gpu] | None = None,
            dla_cores: int = 0, driver: bool = True) -> Machine:
    from runtimes.tensorrt import cuda as adapter_cuda

    cuda_machine = CudaMachine(gpus=[Gpu()] if gpus is None else gpus, driver=driver)
    state = TrtMachine(release, cuda=cuda_machine, dla_cores=dla_cores)
    trt = make_tensorrt(release, state)
    cudart = CudaRuntime(cuda or cuda_for(release), cuda_machine)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(adapter_cuda, "import_cudart", lambda: cudart)  # backend and runner look it up there
    return Machine(trt, cudart, state)
