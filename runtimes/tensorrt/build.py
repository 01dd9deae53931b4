"""Building an engine with the `tensorrt` module (passed in: it is imported only where a build runs).

Parse the ONNX file, configure the builder exactly as the `BuildPlan` says (the builder flags it lists are the
ones the engine cache key records), attach the timing cache, build, save the timing cache.
`create_timing_cache` returns None for data it cannot deserialize, and `set_timing_cache` False for a cache
from another device: either way the build starts from a fresh cache, with one warning line, and the save after
it replaces the file. Engines are built with `ProfilingVerbosity.DETAILED` (it stores layer metadata, not
slower kernels), so the engine inspector names each layer's ONNX nodes for per-layer profiles.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..base import RuntimeAdapterError
from .cache import atomic_write
from .plan import STRONG_ONLY, BuildPlan, DlaSettings, Route, fp32_layer_indices

log = logging.getLogger(__name__)


def create_network(trt, builder, route: Route, version: tuple[int, ...]):
    # STRONGLY_TYPED is opt-in on 10.x and deprecated (ignored) on 11; EXPLICIT_BATCH is never
    # needed: networks are explicit-batch since 10.0 and the flag is gone in 11.
    flags = 0
    if route.name == "strong" and tuple(version[:2]) < STRONG_ONLY:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parse_onnx(trt, network, logger, path: Path):
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so external-data weights resolve next to the model.
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0].splitlines()[0] if errors else "no error reported"
        raise RuntimeAdapterError(f"TensorRT's ONNX parser rejected {path}: {first}{more}")
    return parser


def pin_fp32_layers(trt, network) -> list[str]:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    pinned = []
    for i in fp32_layer_indices([layer.type.name for layer in layers]):
        layer = layers[i]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def configure(trt, builder, network, plan: BuildPlan):
    """A builder config for the plan; returns (config, names of layers pinned to fp32)."""
    config = builder.create_builder_config()
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None:  # layer metadata (the ONNX nodes of each layer) for per-layer profiles
        config.profiling_verbosity = verbosity.DETAILED
    if plan.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.workspace_mib) << 20)
    # The engine cache key records plan.builder_flags(): set exactly those, so the key can't drift from the build.
    for flag in plan.builder_flags():
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = pin_fp32_layers(trt, network) if plan.route.pin_fp32 else []
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not plan.tf32:
        config.clear_flag(tf32)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in plan.profile.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if plan.dla:
        _configure_dla(trt, builder, config, plan.dla)
    return config, pinned


def _configure_dla(trt, builder, config, dla: DlaSettings) -> None:
    cores = builder.num_DLA_cores
    if dla.core >= cores:
        raise RuntimeAdapterError(f"DLA core {dla.core} requested; this device has {cores} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla.core


def attach_timing_cache(config, path: Path | None):
    """The saved timing cache attached to `config`, or a fresh one (one warning) if it cannot be used."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    if data:
        # None: data TensorRT cannot deserialize (truncated, another format). ignore_mismatch=False: a cache
        # from another GPU/version is refused, not silently mixed in.
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        why = "cannot be read" if cache is None else "was made on another GPU or TensorRT version"
        log.warning("tensorrt: timing cache %s %s; starting a fresh one (the build overwrites it)", path, why)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is not None:
        atomic_write(path, bytes(cache.serialize()))


def build_serialized(trt, onnx_path: Path, plan: BuildPlan,
                     version: tuple[int, ...]) -> tuple[bytes, list[str]]:
    """Parse, configure and build; returns (engine bytes, layers pinned to fp32)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(trt, builder, plan.route, version)
    # The parser owns the weights the network points at: it must outlive the build.
    parser = parse_onnx(trt, network, logger, onnx_path)
    config, pinned = configure(trt, builder, network, plan)
    attach_timing_cache(config, plan.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeAdapterError("TensorRT failed to build the engine (the builder log above says why)")
    save_timing_cache(config, plan.timing_cache)
    del parser
    return bytes(serialized), pinned
