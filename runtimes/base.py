"""The common interface every runtime adapter implements (after Polygraphy's runners).

A `Backend` knows whether its runtime is usable here, builds an engine from an ONNX file into a
folder, and loads that folder as a `Runner`. A `Runner` is activated once, then `infer`s on a dict
of named numpy arrays and returns a dict of named numpy arrays; `profile_layers` gives per-node times from
the runtime's own profiler, in a profiling engine of its own (`runtimes.profiling`). Heavy runtimes are
imported inside methods only, so listing backends or running the CLI never needs them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineLoadError, InputMismatchError, RuntimeAdapterError, RuntimeUnavailableError
from .options import RuntimeOptions
from .profiling import ProfileRequest, ProfilingUnavailableError, RuntimeProfile


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first message line (runtimes raise multi-page errors), or its type name."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def check_batches(batch: Sequence[int]) -> list[int]:
    """The batch sizes a build was asked for, as a list; one error if any is not a positive int."""
    batches = list(batch)
    if not batches or not all(isinstance(b, int) and b > 0 for b in batches):
        raise RuntimeAdapterError(f"batch sizes must be positive ints, got {batch!r}")
    return batches


@dataclass(frozen=True)
class Availability:
    available: bool
    version: str | None = None
    reason: str = ""
    devices: tuple[str, ...] = ()
    can_build: bool = False
    can_run: bool = False
    providers: tuple[str, ...] = ()  # the execution providers this runtime has here (ONNX Runtime's)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # str/None for a dynamic dimension
    dtype: str = "float32"

    def accepts(self, array: np.ndarray) -> str | None:
        """None if `array` fits this spec, else what is wrong."""
        if array.ndim != len(self.shape):
            return f"input {self.name!r} has {array.ndim} dims {array.shape}, expected {self._shape_str()}"
        for got, want in zip(array.shape, self.shape, strict=True):
            if isinstance(want, int) and got != want:
                return f"input {self.name!r} has shape {array.shape}, expected {self._shape_str()}"
        return None

    def shape_at(self, batch: int) -> tuple[int, ...]:
        """The concrete shape at `batch`; only the leading (batch) dim may be dynamic."""
        shape = []
        for i, dim in enumerate(self.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif i == 0:
                shape.append(batch)
            else:
                raise RuntimeAdapterError(
                    f"input {self.name!r} has dynamic dim {i} ({dim!r}); only the batch dim may be dynamic"
                )
        return tuple(shape)

    def _shape_str(self) -> str:
        return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape) + ")"


@dataclass
class BuildOptions:
    precision: str = "fp32"
    batch: Sequence[int] = (1,)
    threads: int | None = None
    device: str | None = None
    # Calibration inputs for int8, as a list of feed dicts.
    calibration: list[dict[str, np.ndarray]] | None = None
    runtime: RuntimeOptions | None = None  # the adapter's own settings (its `options_type`); None: its defaults


@dataclass
class ModelSource:
    """What the export stage hands a backend: the ONNX file, the module, or both."""

    input_specs: list[TensorSpec]
    output_names: list[str]
    onnx_path: Path | None = None
    module: Any = None  # torch.nn.Module, for backends that convert from PyTorch

    def example_feed(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {spec.name: rng.standard_normal(spec.shape_at(batch)).astype(spec.dtype) for spec in self.input_specs}


@dataclass(frozen=True)
class BuildResult:
    files: tuple[str, ...]  # relative to the artifact folder; the first is the engine to load
    details: dict[str, Any] = field(default_factory=dict)
    # Batch sizes a static-shape engine accepts (Core ML); None for a dynamic batch.
    batches: tuple[int, ...] | None = None
    # Whether this machine can run the engine even where its runtime runs (ExecuTorch's Core ML delegate on
    # Linux cannot), and why not.
    can_run_here: bool = True
    run_reason: str | None = None


class Runner(abc.ABC):
    """One loaded engine. Use as a context manager, or call activate()/deactivate()."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self.input_specs: list[TensorSpec] = []
        self.output_names: list[str] = []

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            try:
                self._activate()
            except BaseException:
                self._deactivate()  # free what a half-finished activation allocated
                raise
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeAdapterError(f"{self.name}: activate() the runner before infer()")
        self._check_feed(feed)
        return self._infer(feed)

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        expected = {spec.name for spec in self.input_specs}
        if expected and set(feed) != expected:
            raise InputMismatchError(
                f"{self.name}: inputs {sorted(feed)} given, engine takes {sorted(expected)}"
            )
        for spec in self.input_specs:
            problem = spec.accepts(np.asarray(feed[spec.name]))
            if problem:
                raise InputMismatchError(f"{self.name}: {problem}")

    def profiling_unavailable(self) -> str | None:
        """Why this runner cannot profile per node here (None: it can); see `runtimes.profiling`."""
        return "this runtime has no per-node profiler adapter"

    def profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        """Per-node times from the runtime's own profiler, in a profiling engine of its own (never this
        runner's session, so timed runs stay unprofiled). The runner must be active."""
        if not self.is_active:
            raise RuntimeAdapterError(f"{self.name}: activate() the runner before profile_layers()")
        reason = self.profiling_unavailable()
        if reason:
            raise ProfilingUnavailableError(f"{self.name}: {reason}")
        return self._profile_layers(request)

    def _profile_layers(self, request: ProfileRequest) -> RuntimeProfile:
        raise ProfilingUnavailableError(f"{self.name}: {self.profiling_unavailable()}")

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook; most runners hold nothing to free
        """Release the engine; the default drops nothing."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(abc.ABC):
    """A runtime adapter: availability, build (ONNX -> engine files) and load (files -> Runner)."""

    name: str = ""
    pip_extra: str | None = None  # the pip extra that installs the runtime
    precisions: tuple[str, ...] = ("fp32",)
    # What the backend builds from: "onnx" (the rewritten ONNX file) or "torch" (the nn.Module).
    source_kind: str = "onnx"
    options_type: type[RuntimeOptions] = RuntimeOptions  # the settings `BuildOptions.runtime` may carry
    # ONNX opset and default pass list live in deploy/targets.py, not here.

    @abc.abstractmethod
    def availability(self) -> Availability: ...

    def require(self) -> Availability:
        status = self.availability()
        if not status.available:
            hint = f"; install it with `pip install -e .[{self.pip_extra}]`" if self.pip_extra else ""
            raise RuntimeUnavailableError(f"{self.name} is not usable here: {status.reason}{hint}")
        return status

    def parse_options(self, values: Mapping[str, object]) -> RuntimeOptions:
        """This adapter's typed options from names and values (`--option KEY=VALUE`); one error if any is wrong."""
        return self.options_type.parse(values, source=f"{self.name} option")

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise RuntimeAdapterError(
                f"{self.name} cannot build precision {precision!r}; it supports {', '.join(self.precisions)}"
            )

    def onnx_input(self, source: ModelSource) -> Path:
        """The ONNX file a runtime that converts from ONNX builds from; an error if none was exported."""
        if source.onnx_path is None:
            raise RuntimeAdapterError(f"{self.name} builds from an ONNX file; none was exported")
        return Path(source.onnx_path)

    @staticmethod
    def existing_engine(artifact_dir: Path, engine_file: str) -> Path:
        """The engine file (or package folder) in an artifact; an error naming it if it is gone."""
        path = Path(artifact_dir) / engine_file
        if not path.exists():
            raise EngineLoadError(f"engine file {path} is missing; re-run export")
        return path

    @abc.abstractmethod
    def build(self, source: ModelSource, out_dir: Path, options: BuildOptions) -> BuildResult:
        """Write the engine file(s) into `out_dir` (a fresh temporary folder the caller promotes)."""

    @abc.abstractmethod
    def load(
        self,
        artifact_dir: Path,
        engine_file: str,
        options: BuildOptions,
        input_specs: list[TensorSpec] | None = None,
        output_names: list[str] | None = None,
    ) -> Runner:
        """Open a built engine; the specs (from the manifest) serve runtimes that do not store them."""
