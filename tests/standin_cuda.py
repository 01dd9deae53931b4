"""cuda-python's runtime API (`cudart`), generated from a real release's surface, with host memory as "device".

Every function of the release exists, bound against its real signature (`inspect.signature` of the
binding); each returns the tuple its docstring's Returns section lists: `(cudaError_t, value, ...)` on
success and `(error, None, ...)` on failure, as the bindings do. `cudaError_t` and `cudaMemcpyKind` hold the
release's members and values. Behaviour exists only for the calls the TensorRT runner makes; each mirrors
the documented call. "Device" memory is host memory here (ctypes buffers), so copies really move bytes and
a copy outside an allocation is refused with `cudaErrorInvalidValue` (the documented error) instead of
corrupting memory. Without a driver (`CudaMachine(driver=False)`), the device queries do what this release
did on a machine without one when its surface was read (`without_driver` in the fixture): return
`cudaErrorInsufficientDriver`, or raise (cuda-python 12.2).
"""

from __future__ import annotations

import ctypes
import enum
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin_surface import StandInGap, load_surface, surface_names

CUDA_RELEASES = surface_names("cuda")  # e.g. cuda-bindings-13.5.0, cuda-python-12.2.1


@dataclass
class Gpu:
    name: str = "Orin"
    major: int = 8
    minor: int = 7
    memory_bytes: int = 64 << 20


@dataclass
class CudaMachine:
    """The GPUs the stand-in reports, and what its calls did (allocations, streams, copies)."""

    gpus: list[Gpu] = field(default_factory=lambda: [Gpu()])
    driver: bool = True
    current: int = 0
    allocations: dict[int, ctypes.Array] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    copies: list[tuple[str, int]] = field(default_factory=list)  # (kind name, bytes)

    def allocated_bytes(self) -> int:
        return sum(len(buffer) for buffer in self.allocations.values())

    def region(self, pointer: int, size: int) -> bool:
        """Whether [pointer, pointer + size) lies inside one live allocation."""
        return any(start <= pointer and pointer + size <= start + len(buffer)
                   for start, buffer in self.allocations.items())


class CudaFailure(Exception):
    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


class _Stream:
    """cudaStream_t: an opaque handle; int() and getPtr() give its address, as in the bindings."""

    def __init__(self, handle: int = 0):
        self._handle = handle

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:  # noqa: N802 - the binding's name
        return self._handle


def _device_prop(attributes: list[str], gpu: Gpu) -> Any:
    prop = types.SimpleNamespace(**{name: 0 for name in attributes if name != "getPtr"})
    # cuda-python returns the C char[256] name as bytes padded with NULs.
    prop.name, prop.major, prop.minor = gpu.name.encode() + b"\x00" * 8, gpu.major, gpu.minor
    prop.totalGlobalMem = gpu.memory_bytes
    return prop


# ---------------------------------------------------------------- behaviours (documented calls)

def _gpu(machine: CudaMachine, device: int) -> Gpu:
    if not isinstance(device, int) or not 0 <= device < len(machine.gpus):
        raise CudaFailure("cudaErrorInvalidDevice")
    return machine.gpus[device]


def _get_device_count(runtime: Any, machine: CudaMachine) -> list[Any]:
    return [len(machine.gpus)]


def _get_device_properties(runtime: Any, machine: CudaMachine, device: int) -> list[Any]:
    return [_device_prop(runtime._surface["types"]["cudaDeviceProp"]["attributes"], _gpu(machine, device))]


def _set_device(runtime: Any, machine: CudaMachine, device: int) -> list[Any]:
    _gpu(machine, device)
    machine.current = device
    return []


def _stream_create(runtime: Any, machine: CudaMachine) -> list[Any]:
    handle = ctypes.create_string_buffer(8)  # an address that stays unique while the stream lives
    stream = _Stream(ctypes.addressof(handle))
    stream._buffer = handle  # type: ignore[attr-defined]
    machine.streams.add(int(stream))
    return [stream]


def _stream_of(machine: CudaMachine, stream: Any) -> None:
    if int(stream) not in machine.streams:
        raise CudaFailure("cudaErrorInvalidResourceHandle")


def _stream_synchronize(runtime: Any, machine: CudaMachine, stream: Any) -> list[Any]:
    _stream_of(machine, stream)
    return []


def _stream_destroy(runtime: Any, machine: CudaMachine, stream: Any) -> list[Any]:
    _stream_of(machine, stream)
    machine.streams.discard(int(stream))
    return []


def _malloc(runtime: Any, machine: CudaMachine, size: int) -> list[Any]:
    # Documented: cudaErrorMemoryAllocation when the device cannot hold the request.
    if size < 0 or machine.allocated_bytes() + size > machine.gpus[machine.current].memory_bytes:
        raise CudaFailure("cudaErrorMemoryAllocation")
    buffer = (ctypes.c_char * max(1, int(size)))()
    machine.allocations[ctypes.addressof(buffer)] = buffer
    return [ctypes.addressof(buffer)]


def _free(runtime: Any, machine: CudaMachine, devPtr: Any) -> list[Any]:  # noqa: N803 - the binding's name
    if int(devPtr) not in machine.allocations:
        raise CudaFailure("cudaErrorInvalidValue")
    del machine.allocations[int(devPtr)]
    return []


def _memcpy_async(runtime: Any, machine: CudaMachine, dst: Any, src: Any, count: int, kind: Any,
                  stream: Any) -> list[Any]:
    kinds = runtime.cudaMemcpyKind
    if not isinstance(kind, kinds):
        raise TypeError(f"Argument 'kind' is not instance of type (expected {kinds}, got {type(kind)})")
    _stream_of(machine, stream)
    device_side = {kinds.cudaMemcpyHostToDevice: int(dst), kinds.cudaMemcpyDeviceToHost: int(src)}
    if kind not in device_side:
        raise StandInGap(f"stand-in cudaMemcpyAsync has no behaviour for {kind.name}")
    if not machine.region(device_side[kind], int(count)):
        raise CudaFailure("cudaErrorInvalidValue")  # documented error for an invalid pointer or size
    # The copy completes at once here; on a GPU it completes in stream order (before cudaStreamSynchronize returns).
    ctypes.memmove(int(dst), int(src), int(count))
    machine.copies.append((kind.name, int(count)))
    return []


BEHAVIOURS: dict[str, Callable[..., list[Any]]] = {
    "cudaGetDeviceCount": _get_device_count, "cudaGetDeviceProperties": _get_device_properties,
    "cudaSetDevice": _set_device, "cudaStreamCreate": _stream_create, "cudaStreamSynchronize": _stream_synchronize,
    "cudaStreamDestroy": _stream_destroy, "cudaMalloc": _malloc, "cudaFree": _free,
    "cudaMemcpyAsync": _memcpy_async,
}


# ---------------------------------------------------------------- the module

class CudaRuntime(types.ModuleType):
    """The `cudart` module of one release; `_standin_reached` records every public attribute read."""

    def __init__(self, release: str, machine: CudaMachine):
        super().__init__("cuda.bindings.runtime")
        surface = load_surface("cuda", release)
        object.__setattr__(self, "_standin_reached", set())
        self._surface, self._machine, self.release = surface, machine, release
        for name, entry in surface["types"].items():
            if entry["kind"] == "enum":
                setattr(self, name, enum.IntEnum(name, entry["members"]))
        self.cudaStream_t = _Stream
        for name, entry in surface["functions"].items():
            setattr(self, name, self._function(name, entry))

    def __getattribute__(self, key: str) -> Any:
        if not key.startswith("_") and key != "release":
            object.__getattribute__(self, "_standin_reached").add(f"cudart.{key}")
        return super().__getattribute__(key)

    def _function(self, name: str, entry: dict[str, Any]) -> Callable[..., tuple]:
        signature = _signature(entry["signature"])
        slots = max(0, len(entry["returns"]) - 1)  # values after the error code
        runtime = self

        def call(*args: Any, **kwargs: Any) -> tuple:
            bound = signature.bind(*args, **kwargs)  # TypeError on a wrong call, as the binding raises
            machine = runtime._machine
            if not machine.driver and name in runtime._surface["without_driver"]:
                return runtime._without_driver(name, slots)
            behaviour = BEHAVIOURS.get(name)
            if behaviour is None:
                raise StandInGap(f"stand-in cudart.{name} has no behaviour (it exists in {runtime.release})")
            try:
                values = behaviour(runtime, machine, **bound.arguments)
            except CudaFailure as failure:
                return (runtime.cudaError_t[failure.error], *([None] * slots))
            return (runtime.cudaError_t.cudaSuccess, *values)

        call.__name__ = name
        return call

    def _without_driver(self, name: str, slots: int) -> tuple:
        seen = self._surface["without_driver"][name]
        if "raises" in seen:
            raise RuntimeError(seen["message"])
        error, *rest = seen["returns"]
        return (self.cudaError_t[error], *rest)


def _signature(text: str) -> inspect.Signature:
    """inspect.Signature from "cudaMemcpyAsync(dst, src, count, kind: 'cudaMemcpyKind', stream)"."""
    inside = text[text.index("(") + 1:text.rindex(")")]
    names = [part.split(":")[0].split("=")[0].strip() for part in inside.split(",") if part.strip()]
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
