"""The warnings that importing a runtime's library prints on every command and that say nothing about the run.

Importing coremltools or ExecuTorch (which `doctor` does, and every command that builds or probes those
targets) printed, on a CPU-only Linux install, two `Failed to load .../torchao/_C_mxfp8...so` lines, torch's
`KernelPreference` deprecation warning and, with the coremltools logger at its default, eight more. Each one
here is matched by the logger that emits it and a fragment of its message, so any other warning of the same
library still shows. The command line installs them unless `--debug` (`deploy.cli.main`); a program that
imports the runtimes itself keeps every warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    """One import-time warning: the logger that emits it, a fragment of its message, and why it is noise."""

    logger: str
    fragment: str
    why: str


NOISE = (
    Noise("torchao", "Failed to load ", "torchao's CUDA kernels (_C_mxfp8, _C_cutlass_90a), which a CPU-only "
          "torch cannot load; nothing here uses them"),
    Noise("torchao.kernel.intmm", "Detected no triton", "Triton kernels, which CPU inference never uses"),
    Noise("torch.utils._pytree", "register_constant() on Enum subclasses is deprecated",
          "torchao registers its KernelPreference enum with torch's pytree, which torch 2.13 deprecates"),
    Noise("coremltools", "Failed to load _ML", "the macOS-only native module (libcoremlpython): building works "
          "without it, predicting is refused with its own reason (runtimes.coreml_backend)"),
    Noise("coremltools", "has not been tested with coremltools", "a newer torch than coremltools lists: every "
          "conversion is checked by the parity gate instead"),
    Noise("coremltools", "scikit-learn version", "coremltools' scikit-learn converter, which vit-deploy never uses"),
)


class _Drop(logging.Filter):
    """Drops a logger's records whose message contains one of the fragments."""

    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence(noise: Sequence[Noise] = NOISE) -> None:
    """Filter each noisy logger (once: a second call adds nothing)."""
    by_logger: dict[str, list[str]] = {}
    for item in noise:
        by_logger.setdefault(item.logger, []).append(item.fragment)
    for name, fragments in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(fragments))
