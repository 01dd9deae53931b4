"""Accuracy on labelled images: top-1/top-5 of an engine next to PyTorch fp32's on the same inputs.

The datasets themselves (the shipped digits, ImageNet-style folders) come from `deploy.data.datasets`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from ..data.datasets import LabeledSet

def predict(infer: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int) -> np.ndarray:
    """Logits for every image, `batch` at a time; the last batch is padded (engines may fix the batch)."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        short = batch - len(chunk)
        if short:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
        outputs.append(np.asarray(infer(np.ascontiguousarray(chunk)))[:batch - short])
    return np.concatenate(outputs)


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    best = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def accuracy_record(logits: np.ndarray, reference: np.ndarray, dataset: LabeledSet) -> dict[str, Any]:
    """The engine's top-1/top-5, PyTorch's on the same images, and how often their top-1 agree."""
    return {
        "dataset": dataset.name, "source": dataset.source, "images": len(dataset),
        "top1": topk(logits, dataset.labels, 1), "top5": topk(logits, dataset.labels, 5),
        "reference_top1": topk(reference, dataset.labels, 1), "reference_top5": topk(reference, dataset.labels, 5),
        "agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
    }


def torch_reference(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch fp32 eager inference on a numpy batch: the reference every engine is held to."""
    import torch

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return infer


def torch_logits(model: nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return predict(torch_reference(model), images, batch)
