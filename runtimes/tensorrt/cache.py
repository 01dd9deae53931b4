"""Engines and what they were built for: the cache key, the sidecar beside every engine, the engine and timing caches.

* **Engine cache key.** TensorRT version, GPU name, compute capability, sha256 of the ONNX (and its
  external data), precision, route, builder flags, TF32, workspace, profile, DLA settings. It is
  stored in the sidecar; `load` refuses an engine whose TensorRT version, GPU or compute capability
  differ from this machine's, or whose bytes no longer match. Builds reuse a cached engine only when
  the whole key matches (`engine_cache`, default on, under `cache_dir`).
* **Timing cache** per (TensorRT version, GPU, compute capability) file, loaded before and saved
  after every build (`timing_cache` overrides the path); `build` attaches it.

Plain files and JSON: nothing here imports TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..base import EngineLoadError, ModelSource
from .cuda import DeviceInfo
from .plan import DlaSettings, Route, TensorRTOptions

ENGINE_FILE = "model.engine"
SIDECAR_FILE = "model.engine.json"
# Key fields that tie an engine to a machine: an engine is not portable across them.
DEVICE_KEY_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability")


def files_sha256(path: Path, external_files: Sequence[str] = ()) -> str:
    """sha256 over a file and the files beside it that it names (an ONNX model's external data), read in chunks."""
    digest = hashlib.sha256()
    for file in (Path(path), *(Path(path).parent / name for name in external_files)):
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# Every field of the key, by name (keyword-only): one argument per part of the engine's identity.
def engine_cache_key(*, tensorrt_version: str, device: DeviceInfo, model_sha256: str, precision: str,  # noqa: PLR0913
                     route: Route, builder_flags: Sequence[str], profile: Mapping[str, Any],
                     dla: DlaSettings | None, workspace_mib: int | None) -> dict[str, Any]:
    return {
        "tensorrt_version": tensorrt_version,
        "gpu_name": device.name,
        "compute_capability": device.compute_capability,
        "model_sha256": model_sha256,
        "precision": precision,
        "route": route.name,
        "builder_flags": sorted(builder_flags),
        "profile": {name: [list(s) for s in shapes] for name, shapes in sorted(profile.items())},
        "dla": asdict(dla) if dla else None,
        "workspace_mib": workspace_mib,
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def key_mismatches(saved: Mapping[str, Any], current: Mapping[str, Any],
                   fields: Sequence[str] = DEVICE_KEY_FIELDS) -> list[str]:
    return [f"{f}: engine {saved.get(f)!r}, here {current.get(f)!r}" for f in fields
            if saved.get(f) != current.get(f)]


def verify_sidecar(sidecar: Mapping[str, Any], engine_sha256: str, here: Mapping[str, Any]) -> None:
    """Refuse an engine built elsewhere (TensorRT/GPU) or whose bytes changed since it was built."""
    key = sidecar.get("key") or {}
    problems = key_mismatches(key, here)
    if sidecar.get("engine_sha256") != engine_sha256:
        problems.append("engine bytes differ from the ones the sidecar describes")
    if problems:
        raise EngineLoadError("TensorRT engine is stale for this machine (" + "; ".join(problems)
                              + "); engines are not portable across GPUs or TensorRT versions: rebuild it")


def timing_cache_path(cache_dir: Path, tensorrt_version: str, device: DeviceInfo) -> Path:
    """One timing cache per TensorRT version and GPU: its entries are only valid there."""
    return Path(cache_dir) / "tensorrt" / "timing" / f"trt{tensorrt_version}-{device.slug}.cache"


def engine_cache_dir(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / "tensorrt" / "engines" / key_digest(key)


def default_cache_dir(settings: TensorRTOptions) -> Path:
    configured = settings.cache_dir or os.environ.get("VIT_DEPLOY_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vit-deploy"


def lookup_cached_engine(folder: Path, key: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """(engine bytes, sidecar) cached for exactly this key, or None (absent, other key, or bytes changed)."""
    engine_path, sidecar_path = Path(folder) / ENGINE_FILE, Path(folder) / SIDECAR_FILE
    if not (engine_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text())
        engine = engine_path.read_bytes()
    except (OSError, ValueError):
        return None
    if sidecar.get("key") != dict(key) or sidecar.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
        return None
    return engine, sidecar


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_engine(folder: Path, engine: bytes, key: Mapping[str, Any], source: ModelSource,
                 fp32_layers: Sequence[str] = ()) -> dict[str, Any]:
    """Write model.engine and its sidecar (key, engine hash, IO names) into `folder`."""
    sidecar = {
        "key": dict(key), "key_digest": key_digest(key),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "inputs": [{"name": s.name, "shape": [d if isinstance(d, int) else None for d in s.shape],
                    "dtype": s.dtype} for s in source.input_specs],
        "outputs": list(source.output_names),
        "fp32_layers": list(fp32_layers),
    }
    atomic_write(Path(folder) / ENGINE_FILE, engine)
    atomic_write(Path(folder) / SIDECAR_FILE, json.dumps(sidecar, indent=2).encode())
    return sidecar


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineLoadError(f"engine file {engine_path} is missing; re-run export")
    sidecar_path = engine_path.with_name(engine_path.name + ".json")
    if not sidecar_path.is_file():
        raise EngineLoadError(f"{sidecar_path.name} is missing next to {engine_path}: without its cache key "
                              "the engine cannot be checked against this GPU; re-run export")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except ValueError as exc:
        raise EngineLoadError(f"{sidecar_path} is not valid JSON ({exc}); re-run export") from None
    missing = [k for k in ("key", "engine_sha256", "inputs", "outputs") if k not in sidecar]
    if missing:
        raise EngineLoadError(f"{sidecar_path} lacks {', '.join(missing)}; re-run export")
    return sidecar
