"""The ONNX graphs one model's exports share: the clean export, `--passes auto`'s choice and the rewritten files.

A bench run exports a model once per (target, precision); every ONNX target starts from the same clean
export, and targets whose pass lists agree share one rewritten file. A lone export keeps a cache of its
own, so `--passes auto` tunes on the same clean export it then rewrites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

    from .manifest import AutotuneRecord, OnnxRecord


@dataclass(frozen=True)
class GraphKey:
    """What a clean export depends on: the model (by name, and what it was asked to be), and the opset."""

    model: str
    identity: str  # a digest of the model request: weights, overrides, seed, factory or module
    opset: int

    @property
    def slug(self) -> str:
        return f"{self.model}-opset{self.opset}"


@dataclass(frozen=True)
class SavedGraph:
    """A rewritten graph on disk and its manifest record (exporter, opset, sha256, passes, op histogram)."""

    path: Path
    details: OnnxRecord


class OnnxCache:
    """Graphs of one model at a time, in memory (clean exports, auto choices) and on disk (rewritten files).

    `folder` holds the rewritten files; the caller owns it (a bench run's temporary folder, or an export's
    work folder). Asking for another model's graphs drops the previous model's, so a long run's memory
    stays bounded by one model (the bench plan is model-major).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._model: str | None = None
        self._clean: dict[GraphKey, onnx.ModelProto] = {}
        self._auto: dict[tuple[GraphKey, str, str], AutotuneRecord] = {}
        self._saved: dict[tuple[GraphKey, tuple[str, ...]], SavedGraph] = {}

    def _hold(self, key: GraphKey) -> None:
        if key.model != self._model:
            self._clean.clear()
            self._auto.clear()
            self._saved.clear()
            self._model = key.model

    def clean(self, key: GraphKey, export: Callable[[], onnx.ModelProto]) -> onnx.ModelProto:
        """The cleaned-up export before any pass, made by `export()` the first time it is asked for."""
        self._hold(key)
        if key not in self._clean:
            self._clean[key] = export()
        return self._clean[key]

    def auto_choice(self, key: GraphKey, target: str, precision: str,
                    tune: Callable[[], AutotuneRecord]) -> AutotuneRecord:
        """`--passes auto`'s record for (target, precision), measured by `tune()` the first time."""
        self._hold(key)
        slot = (key, target, precision)
        if slot not in self._auto:
            self._auto[slot] = tune()
        return self._auto[slot]

    def saved(self, key: GraphKey, passes: tuple[str, ...]) -> SavedGraph | None:
        self._hold(key)
        return self._saved.get((key, passes))

    def store(self, key: GraphKey, passes: tuple[str, ...], graph: SavedGraph) -> SavedGraph:
        self._hold(key)
        self._saved[(key, passes)] = graph
        return graph
