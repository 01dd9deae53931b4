"""Classify images with an artifact: its own preprocessing, its own labels, its runtime.

Takes an artifact folder and image files; hands on one `Prediction` per image: the top classes with their
softmax probabilities. The artifact's manifest says how an image becomes the engine's input (resize, crop,
mean, std) and what each output is called, so nothing else is needed; `load_artifact` checks the files and
restores the runtime options the engine was built with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import Preprocessing

from .callable import callable_package
from .data.images import read_images
from .errors import DeployError
from .export.accuracy import predict as batched_predict
from .export.stage import load_artifact


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    image: str
    top: tuple[ClassScore, ...]


def predict_files(artifact: Path, images: Sequence[Path], top: int = 5, labels: Sequence[str] | None = None,
                  threads: int | None = None, options: Mapping[str, object] | None = None) -> list[Prediction]:
    """The `top` classes of every image, most probable first."""
    if top < 1:
        raise DeployError(f"--top must be at least 1, not {top}")
    runner, manifest = load_artifact(Path(artifact), threads=threads, options=options)
    record = manifest.model
    preprocessing = Preprocessing(tuple(record.input_size), tuple(record.mean), tuple(record.std),  # type: ignore[arg-type]
                                  record.interpolation, record.crop_pct, record.resize)  # type: ignore[arg-type]
    names = list(labels or record.labels or [])
    for path in images:
        if not Path(path).is_file():
            raise DeployError(f"image {path} does not exist" if not Path(path).exists() else f"{path} is not a file")
    pixels = read_images([Path(p) for p in images], preprocessing)
    batch = _batch(manifest.engine.batches)
    with runner:
        input_name, output = runner.input_specs[0].name, manifest.outputs[0].name
        logits = batched_predict(lambda x: runner.infer({input_name: x})[output], pixels, batch)
    probabilities = _softmax(logits.astype(np.float64))
    if names and len(names) != probabilities.shape[-1]:
        raise DeployError(f"{len(names)} labels for {probabilities.shape[-1]} classes: give one label per class")
    out = []
    for path, row in zip(images, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")[:top]
        out.append(Prediction(str(path), tuple(ClassScore(int(i), names[i] if names else str(int(i)), float(row[i]))
                                               for i in order)))
    return out


def _batch(batches: list[int] | str) -> int:
    """The engine's batch for one image at a time: 1 where it serves it, else its smallest (padded)."""
    if batches == "dynamic" or not batches or 1 in batches:
        return 1
    return min(int(b) for b in batches)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def format_predictions(predictions: Sequence[Prediction]) -> str:
    lines = []
    for prediction in predictions:
        lines.append(prediction.image)
        width = max(len(score.label) for score in prediction.top)
        for score in prediction.top:
            lines.append(f"  {score.probability:7.2%}  {score.label:<{width}}  (class {score.index})")
    return "\n".join(lines)


def predictions_json(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    return [{"image": p.image, "top": [{"index": s.index, "label": s.label, "probability": s.probability}
                                       for s in p.top]} for p in predictions]


def predict_images(artifact: str | Path, images: Sequence[str | Path], /, top: int = 5,
                   **kwargs: Any) -> list[Prediction]:
    """The `top` classes of each image, with the artifact's own preprocessing and labels."""
    return predict_files(Path(artifact), [Path(p) for p in images], top=top, **kwargs)


callable_package(__name__, predict_images)  # `from deploy import predict; predict(artifact, images)`
