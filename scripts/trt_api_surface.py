"""Write the API surfaces of real TensorRT and cuda-python releases to tests/data (the tests' source of truth).

    python scripts/trt_api_surface.py                      # every release in TENSORRT and CUDA_PYTHON
    python scripts/trt_api_surface.py --tensorrt 10.13.3.9 --cuda none

TensorRT cannot run without an NVIDIA GPU, and its libraries come only from NVIDIA's index, but its Python
bindings (`tensorrt-cu12-bindings`, about 1.2 MB a release) are on PyPI. They load once stub
`libnvinfer.so.N`, `libnvinfer_plugin.so.N` and `libnvonnxparser.so.N` exporting a few C entry points are on
the library path: every C++ method is reached through a vtable, so nothing else is resolved at import. Nothing
can be built that way, but every class, property (with whether it has a setter), method signature (from the
pybind11 docstrings) and enum member with its value can be read. The same goes for cuda-python's runtime API
(`cuda-bindings`; old `cuda-python` releases carried it themselves), which imports without a driver.

For each release this downloads the wheel (`pip download --no-deps`), builds the stubs with the system `cc`,
imports the bindings in a fresh subprocess (this script's `--dump-*` modes) and writes
`tests/data/tensorrt_api/<version>.json` or `tests/data/cuda_api/<distribution>-<version>.json`.
Needs network (PyPI) and a C compiler; the tests read the committed files and need neither.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRT_OUT = ROOT / "tests" / "data" / "tensorrt_api"
CUDA_OUT = ROOT / "tests" / "data" / "cuda_api"
SCHEMA = 1

# The releases the adapter targets: the oldest it accepts, JetPack 6 (10.3), the last before weak typing was
# deprecated (10.12 deprecates it), JetPack 7 / 10.13, the latest 10.x, the first 11 and the latest 11.x.
TENSORRT = ("10.0.1", "10.3.0", "10.12.0.36", "10.13.3.9", "10.16.1.11", "11.0.0.114", "11.4.0.106")
# cuda-python's runtime API: the old layout (`from cuda import cudart`, JetPack 6's CUDA 12.2 era) and
# the latest cuda-bindings for CUDA 12 and 13 (`from cuda.bindings import runtime`).
CUDA_PYTHON = ("cuda-python==12.2.1", "cuda-bindings==12.9.10", "cuda-bindings==13.5.0")
# cuda-bindings >= 12.8 imports cuda-pathfinder (pure Python) to find the CUDA libraries.
PATHFINDER = "cuda-pathfinder"

# The C entry points the bindings import (seen for 10.0-11.4); a missing one is found and added by retrying.
STUB_SYMBOLS = ["createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
                "getBuilderPluginRegistry", "getPluginRegistry", "initLibNvInferPlugins",
                "createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"]
STUB_LIBRARIES = ["libnvinfer.so.{major}", "libnvinfer_plugin.so.{major}", "libnvonnxparser.so.{major}"]
# cuda-python: the types the runner touches besides functions.
CUDA_TYPES = ("cudaError_t", "cudaMemcpyKind", "cudaStream_t", "cudaDeviceProp")

# Modules the TensorRT package imports for itself: not part of its API.
_SKIP_MODULE_NAMES = {"ctypes", "os", "sys", "warnings", "tensorrt", "tensorrt_bindings"}
_SKIP_DUNDERS = {"__doc__", "__module__", "__dict__", "__weakref__", "__qualname__", "__entries", "__members__",
                 "__annotations__", "__firstlineno__", "__static_attributes__", "__new__", "__del__"}
_PREFIX = re.compile(r"\b(?:tensorrt_bindings\.tensorrt|tensorrt\.tensorrt|tensorrt_bindings|tensorrt)\.")


# ---------------------------------------------------------------- reading a module (runs in the subprocess)

def _clean(text: str) -> str:
    return _PREFIX.sub("", text).strip()


def _signatures(name: str, obj: Any) -> list[str]:
    """pybind11 signatures from a docstring ("name(self: X, a: int) -> bool"), overloads included."""
    doc = getattr(obj, "__doc__", None) or ""
    found = [_clean(m.group(1)) for m in re.finditer(rf"^(?:\d+\. )?({re.escape(name)}\(.*\).*)$", doc, re.M)]
    found = [s for s in found if not s.startswith(f"{name}(*args, **kwargs)")]
    if found:
        return found
    try:  # a function written in Python (the package's __init__ adds a few)
        return [f"{name}{inspect.signature(obj)}"]
    except (TypeError, ValueError):
        return []


def _deprecated(doc: str | None) -> bool:
    return bool(doc) and ("[DEPRECATED]" in doc or re.search(r"\bDeprecated (in|since)\b", doc) is not None)


def _enum_entry(cls: type) -> dict[str, Any]:
    members = {name: int(value) for name, value in cls.__members__.items()}
    doc = cls.__doc__ or ""
    deprecated = sorted(n for n in members if re.search(rf"^\s*{re.escape(n)} : \[DEPRECATED\]", doc, re.M))
    return {"kind": "enum", "members": members, **({"deprecated": deprecated} if deprecated else {})}


def _is_enum(obj: Any) -> bool:
    return isinstance(obj, type) and isinstance(getattr(obj, "__members__", None), dict)


def _value_entry(value: Any, names: dict[int, str]) -> dict[str, Any] | None:
    """An enum member or plain constant found on a module or class; None for anything else."""
    kind = type(value)
    if _is_enum(kind) and id(kind) in names:
        return {"enum": names[id(kind)], "member": value.name}
    if isinstance(value, (bool, int, float, str)):
        return {"constant": value}
    return None


def _class_entry(cls: type, names: dict[int, str]) -> dict[str, Any]:
    if _is_enum(cls):
        entry = _enum_entry(cls)
        props = {k: _property(v) for k, v in vars(cls).items()
                 if isinstance(v, property) and k not in ("name", "value") and not k.startswith("__")}
        return {**entry, **({"properties": props} if props else {})}
    bases = [names[id(b)] for b in cls.__bases__ if id(b) in names]
    properties, methods, values, nested, deprecated = {}, {}, {}, {}, []
    for key, value in vars(cls).items():
        if key in _SKIP_DUNDERS or key.startswith("__pybind11") or key.startswith("_pybind11"):
            continue
        if type(value).__name__ == "wrapper_descriptor":
            continue  # object's own slot (an __init__ that says "No constructor defined!"): not the class's API
        if isinstance(value, property):
            properties[key] = _property(value)
        elif isinstance(value, type) and id(value) in names:
            nested[key] = names[id(value)]
        elif callable(value) or isinstance(value, (staticmethod, classmethod)):
            target = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            signatures = _signatures(key, target)
            if signatures or not key.startswith("__"):
                methods[key] = signatures
            if _deprecated(getattr(target, "__doc__", None)):
                deprecated.append(key)
        elif (entry := _value_entry(value, names)) is not None:
            values[key] = entry
    class_doc = cls.__doc__ or ""
    deprecated += [k for k in properties if re.search(rf":ivar {re.escape(k)}:.*\[DEPRECATED\]", class_doc)]
    entry: dict[str, Any] = {"kind": "class", "bases": bases, "properties": properties, "methods": methods}
    for key, part in (("values", values), ("nested", nested), ("deprecated", sorted(set(deprecated)))):
        if part:
            entry[key] = part
    return entry


def _property(prop: property) -> dict[str, Any]:
    doc = _clean((prop.fget.__doc__ or "") if prop.fget else "")
    match = re.search(r"->\s*(.+)$", doc.splitlines()[0]) if doc else None
    return {"type": match.group(1).strip() if match else None, "settable": prop.fset is not None}


def _all_classes(module: Any) -> dict[str, type]:
    """Qualified name -> class, nested classes (ILogger.Severity) included, each once under its own name."""
    found: dict[str, type] = {}

    def visit(owner: Any, prefix: str) -> None:
        for key, value in sorted(vars(owner).items()):
            if not isinstance(value, type) or key.startswith("_"):
                continue
            qualified = f"{prefix}{key}"
            own = getattr(value, "__qualname__", key)
            if prefix and own != qualified:
                continue  # an alias (Logger.Severity is ILogger.Severity): recorded under its own name
            if id(value) in {id(c) for c in found.values()}:
                continue
            found[qualified] = value
            visit(value, qualified + ".")

    visit(module, "")
    return found


def dump_tensorrt(site: str) -> dict[str, Any]:
    sys.path.insert(0, site)
    import tensorrt_bindings as trt

    classes = _all_classes(trt)
    names = {id(cls): name for name, cls in classes.items()}
    functions, values = {}, {}
    for key, value in sorted(vars(trt).items()):
        if key.startswith("_") and key != "__version__" or key in _SKIP_MODULE_NAMES or isinstance(value, type):
            continue
        if inspect.ismodule(value):
            continue
        if callable(value):
            functions[key] = _signatures(key, value)
        elif (entry := _value_entry(value, names)) is not None:
            values[key] = entry
    return {"version": trt.__version__, "functions": functions, "values": values,
            "classes": {name: _class_entry(cls, names) for name, cls in sorted(classes.items())}}


def _returns(doc: str) -> list[dict[str, str]]:
    """The Returns section of a cuda-python docstring (numpydoc): the tuple the call returns, in order."""
    section = re.search(r"^( *)Returns\n\1-+\n(.*?)(?=^\1\S[^\n]*\n\1-+\n|\Z)", doc, re.S | re.M)
    if not section:
        return []
    indent = section.group(1)
    items = []
    for line in section.group(2).splitlines():
        match = re.match(rf"^{indent}(\w+)(?: : (.+))?$", line)
        if match:
            name, kind = match.group(1), match.group(2)
            items.append({"name": name, "type": _cuda_type(kind or name)})
    return items


def _cuda_type(text: str) -> str:
    return re.sub(r":py:obj:`~?\.?([\w.]+)[^`]*`", r"\1", text).strip()


def dump_cuda(site: str) -> dict[str, Any]:
    sys.path.insert(0, site)
    layouts, module = [], None
    for path in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            imported = __import__(path, fromlist=["_"])
        except ImportError:
            continue
        layouts.append(path)
        module = module or imported
    if module is None:
        raise SystemExit("no cuda-python runtime module imports")
    functions = {}
    for key, value in sorted(vars(module).items()):
        if key.startswith("cuda") and callable(value) and not isinstance(value, type):
            try:
                signature = f"{key}{inspect.signature(value)}"
            except (TypeError, ValueError):
                signature = (value.__doc__ or "").strip().splitlines()[0] if value.__doc__ else f"{key}(...)"
            functions[key] = {"signature": signature, "returns": _returns(value.__doc__ or "")}
    types_: dict[str, Any] = {}
    for key in CUDA_TYPES:
        cls = getattr(module, key)
        if isinstance(getattr(cls, "__members__", None), Mapping):
            types_[key] = {"kind": "enum", "members": {n: int(v) for n, v in cls.__members__.items()}}
        else:
            types_[key] = {"kind": "class", "attributes": sorted(a for a in dir(cls) if not a.startswith("_")),
                           "int": hasattr(cls, "__int__")}
    return {"version": _distribution_version(module), "layouts": layouts, "functions": functions,
            "types": types_, "without_driver": _without_driver(module)}


def _distribution_version(module: Any) -> str:
    for name in ("cuda.bindings", "cuda"):
        version = getattr(sys.modules.get(name), "__version__", None)
        if version:
            return str(version)
    return "unknown"


def _without_driver(module: Any) -> dict[str, Any]:
    """What the device queries do on a machine without an NVIDIA driver (this one): a tuple or an exception."""
    seen = {}
    for call, args in (("cudaGetDeviceCount", ()), ("cudaSetDevice", (0,))):
        try:
            result = getattr(module, call)(*args)
        except Exception as exc:  # cuda-python 12.2 raises instead of returning an error code
            seen[call] = {"raises": type(exc).__name__, "message": str(exc).splitlines()[0]}
        else:
            seen[call] = {"returns": [getattr(r, "name", r) for r in result]}
    return seen


# ---------------------------------------------------------------- downloading and stubbing (the parent)

def _pip_download(requirement: str, folder: Path) -> Path:
    """The wheel of `requirement` (no dependencies), downloaded into a folder of its own."""
    target = folder / re.sub(r"[^\w.-]+", "_", requirement)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "-d", str(target), requirement], check=True)
    (wheel,) = target.glob("*.whl")
    return wheel


def _unpack(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)


def _build_stubs(folder: Path, libraries: list[str], symbols: list[str]) -> None:
    source = folder / "stub.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in sorted(set(symbols))))
    for library in libraries:
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / library), f"-Wl,-soname,{library}",
                        str(source)], check=True)


def _run_dump(mode: str, site: Path, stubs: Path | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    if stubs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(stubs), env.get("LD_LIBRARY_PATH")]))
    return subprocess.run([sys.executable, "-I" if stubs is None else "-s", __file__, mode, str(site)],
                          capture_output=True, text=True, env=env)


def tensorrt_surface(version: str, work: Path) -> dict[str, Any]:
    site, stubs = work / f"trt-{version}", work / f"stubs-{version}"
    site.mkdir()
    stubs.mkdir()
    wheel = _pip_download(f"tensorrt-cu12-bindings=={version}", work)
    _unpack(wheel, site)
    libraries = [lib.format(major=version.split(".")[0]) for lib in STUB_LIBRARIES]
    symbols = list(STUB_SYMBOLS)
    for _ in range(20):  # each try names one missing library or symbol
        _build_stubs(stubs, libraries, symbols)
        result = _run_dump("--dump-tensorrt", site, stubs)
        if result.returncode == 0:
            surface = json.loads(result.stdout)
            return {"schema": SCHEMA, "distribution": "tensorrt-cu12-bindings", "wheel": wheel.name,
                    "python": f"{sys.version_info.major}.{sys.version_info.minor}",
                    "generated_by": "scripts/trt_api_surface.py", **surface}
        missing_lib = re.search(r"(lib[\w+-]+\.so(?:\.\d+)*): cannot open shared object", result.stderr)
        missing_symbol = re.search(r"undefined symbol: (\w+)", result.stderr)
        if missing_lib and missing_lib.group(1) not in libraries:
            libraries.append(missing_lib.group(1))
        elif missing_symbol and missing_symbol.group(1) not in symbols:
            symbols.append(missing_symbol.group(1))
        else:
            raise SystemExit(f"TensorRT {version}: the bindings did not import:\n{result.stderr[-2000:]}")
    raise SystemExit(f"TensorRT {version}: gave up stubbing after 20 tries")


def cuda_surface(requirement: str, work: Path) -> dict[str, Any]:
    distribution, version = requirement.split("==")
    site = work / f"{distribution}-{version}"
    site.mkdir()
    wheel = _pip_download(requirement, work)
    _unpack(wheel, site)
    if distribution == "cuda-bindings":
        _unpack(_pip_download(PATHFINDER, work), site)
    result = _run_dump("--dump-cuda", site, None)
    if result.returncode != 0:
        raise SystemExit(f"{requirement}: the runtime API did not import:\n{result.stderr[-2000:]}")
    return {"schema": SCHEMA, "distribution": distribution, "wheel": wheel.name,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "generated_by": "scripts/trt_api_surface.py", **json.loads(result.stdout)}


def _write(path: Path, surface: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(surface, indent=1, sort_keys=True) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"wrote {path.relative_to(ROOT)} ({len(text) // 1024} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensorrt", nargs="*", default=list(TENSORRT), help="TensorRT releases (none: skip)")
    parser.add_argument("--cuda", nargs="*", default=list(CUDA_PYTHON),
                        help="cuda-python requirements, e.g. cuda-bindings==13.5.0 (none: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trt-surface-") as tmp:
        work = Path(tmp)
        for version in (v for v in args.tensorrt if v != "none"):
            surface = tensorrt_surface(version, work)
            _write(TRT_OUT / f"{surface['version']}.json", surface)
        for requirement in (r for r in args.cuda if r != "none"):
            surface = cuda_surface(requirement, work)
            _write(CUDA_OUT / f"{surface['distribution']}-{surface['version']}.json", surface)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--dump-tensorrt", "--dump-cuda"):
        dump = dump_tensorrt if sys.argv[1] == "--dump-tensorrt" else dump_cuda
        json.dump(dump(sys.argv[2]), sys.stdout)
        sys.exit(0)
    sys.exit(main())
