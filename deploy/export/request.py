"""What the export stage is asked for, what it hands on, and what building one engine needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import LoadedModel, ModelRequest

if TYPE_CHECKING:
    from torch import nn

    from runtimes import Backend, BuildOptions, ModelSource, RuntimeOptions

    from ..data.datasets import LabeledSet
    from ..passes.quantize import Calibration
    from .autotune import AutotuneSettings
    from .gate import Verdict
    from .manifest import Manifest
    from .targets import TargetSpec


@dataclass(frozen=True)
class ExportRequest:
    # What to export: a request (a zoo name is short for ModelRequest(model=name)), or a model already built.
    model: ModelRequest | LoadedModel | str
    target: str = "onnxruntime"
    precision: str | None = None  # None: the target's default
    out: Path = Path("artifacts")
    passes: str | None = "default"  # default | none | auto | a,b | +a,-b
    autotune: AutotuneSettings | None = None  # --passes auto's timing budget (None: defaults, DEPLOY_AUTO_*)
    opset: int | None = None
    batch: tuple[int, ...] = (1, 4)  # dynamic-batch range the engine must serve; parity runs at each
    threads: int | None = None
    runtime_device: str | None = None  # the runtime's own device (OpenVINO CPU/GPU), not a device profile
    seed: int = 0  # of the parity inputs and, for a zoo name given as a string, of a random initialisation
    calib_dir: Path | None = None
    calib_samples: int = 64
    calib_method: str = "minmax"  # int8 Q/DQ ranges: minmax, entropy or percentile
    gated: bool = True  # False: publish an engine that fails parity too (still recorded as failed)
    runtime_options: RuntimeOptions | None = None  # the target adapter's typed settings (`--option KEY=VALUE`)

    @property
    def model_request(self) -> ModelRequest:
        if isinstance(self.model, ModelRequest):
            return self.model
        if isinstance(self.model, LoadedModel):
            return self.model.request
        return ModelRequest(model=self.model, seed=self.seed)


@dataclass(frozen=True)
class ExportResult:
    artifact_dir: Path  # where the engine was published
    manifest: Manifest
    loaded: LoadedModel  # the model as built, with its card
    verdict: Verdict

    @property
    def model(self) -> nn.Module:
        """The PyTorch module the engine was exported from (unfolded): the parity reference."""
        return self.loaded.module

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


@dataclass(frozen=True)
class EngineJob:
    """Building and checking one engine: the export stage, its parity check and `--passes auto` share it."""

    target: TargetSpec
    precision: str
    backend: Backend
    options: BuildOptions
    source: ModelSource  # input specs, output names and the (BatchNorm-folded) module; the ONNX file once exported
    reference: Callable[[np.ndarray], np.ndarray]  # PyTorch fp32 on a numpy batch
    seed: int = 0
    calibration: Calibration | None = None  # int8: the samples and method the Q/DQ pass calibrates with
    labelled: LabeledSet | None = None  # the model's held-out labelled images: low precision is gated on them
    model_name: str = "MODEL"  # for the hints an engine that fails parity prints

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.source.input_specs[0].shape[1:])  # type: ignore[arg-type]

    def with_source(self, source: ModelSource) -> EngineJob:
        return replace(self, source=source)
