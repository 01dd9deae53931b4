"""Accuracy per engine on a labelled set, next to PyTorch fp32's logits, computed once per model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtimes import Runner

from ..data import datasets
from ..data.images import DatasetError
from ..errors import DeployError
from ..export import accuracy
from .results import AccuracyRecord

if TYPE_CHECKING:
    from models import LoadedModel
    from models.registry import ModelInfo


class References:
    """The labelled set and PyTorch's logits on it, per model, shared by all of that model's engines.

    A set that cannot be read (`DatasetError`: too few of its images decode) is remembered too, so each
    engine of the model fails with the same line without decoding the set again.
    """

    def __init__(self, dataset: str, limit: int | None):
        self.dataset, self.limit = dataset, limit
        self._cache: dict[str, tuple[datasets.LabeledSet, np.ndarray] | DatasetError] = {}

    def get(self, model: LoadedModel) -> tuple[datasets.LabeledSet, np.ndarray]:
        card = model.card
        if card.name not in self._cache:
            try:
                labelled = datasets.load_dataset(self.dataset, card.preprocessing, self.limit,
                                                 num_classes=card.num_classes)
            except DatasetError as exc:
                self._cache[card.name] = exc
            else:
                self._cache[card.name] = (labelled, accuracy.torch_logits(model.module, labelled.images))
        cached = self._cache[card.name]
        if isinstance(cached, DatasetError):
            raise cached
        return cached


def engine_accuracy(runner: Runner, model: LoadedModel, batch: int, references: References) -> AccuracyRecord:
    """The engine's top-1/top-5 on the set at `batch`, PyTorch's, and their agreement."""
    labelled, reference = references.get(model)
    input_name = runner.input_specs[0].name if runner.input_specs else "input"
    output = runner.output_names[0] if runner.output_names else "logits"
    logits = accuracy.predict(lambda x: runner.infer({input_name: x})[output], labelled.images, batch)
    return AccuracyRecord(**accuracy.accuracy_record(logits, reference, labelled), batch=batch)


def check_dataset(spec: str, info: ModelInfo, classes: int | None = None) -> None:
    """Refuse a dataset that cannot serve a zoo model (of `classes` outputs, when fine-tuned) before any export."""
    classes = classes or int(info.config.get("num_classes", 1000))
    if spec not in datasets.SHIPPED:
        found = len(datasets.class_folders(Path(spec))[0])
        if found > classes:
            raise DeployError(f"--dataset {spec} has {found} classes; {info.name} predicts {classes}")
        return
    if classes != 10:
        raise DeployError(f"--dataset {spec} holds 10 digit classes; {info.name} predicts {classes} "
                          "(use it with a *_digits reference such as hvt_digits, or pass an image folder)")
