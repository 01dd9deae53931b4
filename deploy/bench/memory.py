"""Peak memory of one engine from its load through its timed runs (RSS high-water mark, GPU memory in use)."""

from __future__ import annotations

import gc
import platform
from pathlib import Path

from .results import MemoryRecord


class MemoryWatch:
    """Peak resident memory from engine load on, and GPU memory in use, for one (model, target, precision).

    Linux: the kernel's high-water mark (VmHWM) is reset on start by writing 5 to /proc/self/clear_refs,
    so the peak is this engine's, not the export's. Elsewhere ru_maxrss, the process's lifetime peak.
    """

    def __init__(self) -> None:
        _release_freed_memory()
        self.method = "VmHWM (reset at engine load)" if _reset_hwm() else "ru_maxrss (process lifetime peak)"
        self.base_mb = _rss_mb()
        self.gpu_base_mb = _gpu_used_mb()

    def snapshot(self) -> MemoryRecord:
        peak = _peak_rss_mb()
        growth = peak - self.base_mb if peak is not None and self.base_mb is not None else None
        gpu = _gpu_used_mb()
        # Device-wide use after the timed runs, less what was in use before the engine loaded.
        gpu_used = max(0.0, gpu - self.gpu_base_mb) if gpu is not None and self.gpu_base_mb is not None else None
        return MemoryRecord(rss_peak_mb=peak, rss_at_load_mb=self.base_mb, method=self.method, rss_growth_mb=growth,
                            gpu_used_mb=gpu_used)


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so the export's leftovers do not hide the
    engine's own allocations: without it, the engine reuses memory the export freed and its growth reads ~0."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the growth figure is a lower bound


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmHWM") is not None
    except OSError:
        return False


def _rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float | None:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if platform.system() == "Darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


def _gpu_used_mb() -> float | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20
    except Exception:  # a broken CUDA stack must not fail a CPU benchmark
        return None
