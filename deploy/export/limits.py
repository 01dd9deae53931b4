"""What a request may ask for, checked before any work: batch sizes, the ONNX opset, and free disk space.

Batch sizes are positive and at most `MAX_BATCH` (the batch range the exported graphs and programs
declare), and at most what this machine's memory can hold: the largest intermediate tensor of one image
(traced on the meta device, so it costs no memory) times `LIVE_COPIES`, against the memory available to
this process (MemAvailable, the cgroup's limit and the address-space rlimit, whichever is smallest).
`LIVE_COPIES` covers the runtime's workspace, the PyTorch reference and the parity inputs next to the
engine's own activations; 8 keeps a hvt_s_1 batch of 3000 (6.6 GB of largest tensors alone) out of a
6 GiB limit, where it was killed for memory.
"""

from __future__ import annotations

import functools
import resource
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DeployError

if TYPE_CHECKING:
    from models import ModelRequest

    from .request import ExportRequest
    from .targets import TargetSpec

MAX_BATCH = 1024  # the exported graphs' dynamic batch range is 1..1024
LIVE_COPIES = 8
# The dynamo exporter writes opset 18 and newer; an older request used to be converted up silently.
MIN_OPSET = 18


def available_memory() -> int | None:
    """Bytes this process may still allocate: the least of MemAvailable, the cgroup limit and RLIMIT_AS."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            candidates.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        candidates.append(soft)
    return min(candidates) if candidates else None


@functools.cache
def largest_activation_bytes(model: str) -> int:
    """The largest intermediate tensor of one image through the zoo variant `model` (fp32), on the meta device."""
    import models
    from models.complexity import meta_model

    return activation_bytes(meta_model(model), models.get_model_info(model).input_size)


def activation_bytes(module: Any, input_size: tuple[int, ...]) -> int:
    """The largest intermediate tensor of one image through `module` (fp32), traced on the meta device."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from models.complexity import on_meta

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.largest = max(self.largest, tensor.numel() * tensor.element_size())
            return out

    meta = on_meta(module).eval()
    x = torch.empty(1, *input_size, device="meta")
    try:
        with Largest() as tracer, torch.no_grad():
            meta(x)
    except Exception:  # a module the meta device cannot run: no estimate, so no refusal on memory
        return 0
    return tracer.largest


def check_batches(batches: Sequence[int], model: str, flag: str = "--batch") -> None:
    """One error line, before any work, for a batch size that is not positive or cannot fit here (a zoo variant)."""
    check_batch_sizes(batches, flag)
    check_batches_fit(batches, largest_activation_bytes(model), model, flag)


def check_zoo_fit(model: ModelRequest, batches: Sequence[int]) -> bool:
    """For a zoo variant at its registered size, check that the batches fit before anything is built (its
    activations are known from the registry); False for any other model, to be checked once it is built."""
    from models.card import is_hub_folder

    if model.module is not None or model.factory is not None or model.model is None or model.img_size is not None \
            or is_hub_folder(model.model):
        return False
    import models

    check_batches(batches, models.resolve_name(model.model))
    return True


def check_batch_sizes(batches: Sequence[int], flag: str = "--batch") -> None:
    """Batch sizes are positive integers up to `MAX_BATCH`."""
    bad = [b for b in batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad or not batches:
        raise DeployError(f"{flag} {bad[0] if bad else '(none)'}: batch sizes are positive integers")
    largest = max(batches)
    if largest > MAX_BATCH:
        raise DeployError(f"{flag} {largest} is over {MAX_BATCH}, the largest batch the exported engines declare "
                          f"(their batch range is 1..{MAX_BATCH})")


def check_batches_fit(batches: Sequence[int], image_bytes: int, model: str, flag: str = "--batch") -> None:
    """The largest batch fits this machine's memory, at `image_bytes` of largest activation per image."""
    memory = available_memory()
    if memory is None or not image_bytes:
        return
    largest = max(batches)
    per_image = image_bytes * LIVE_COPIES
    fits = max(1, memory // max(per_image, 1))
    if largest > fits:
        raise DeployError(f"{flag} {largest} is more than this machine can hold for {model}: about {fits} images "
                          f"({per_image / 2**20:.0f} MB each, estimated from its largest intermediate tensor; "
                          f"{memory / 2**30:.1f} GiB available)")


def check_counts(request: ExportRequest) -> None:
    """Threads and calibration samples, where given, are positive."""
    for flag, value in (("--threads", request.threads), ("--calib-samples", request.calib_samples)):
        if value is not None and value < 1:
            raise DeployError(f"{flag} must be at least 1, not {value}")


def check_passes(spec: TargetSpec, passes: str | None, precision: str) -> None:
    """Unknown pass names fail before the model is built and exported, not minutes later."""
    if spec.opset is None or passes in (None, "", "default", "none", "auto"):
        return
    from ..passes.pipeline import get_pass
    from .targets import resolve_passes

    for name in resolve_passes(spec, passes, precision):
        get_pass(name)


def check_opset(opset: int | None, target: str, target_opset: int | None) -> None:
    """`--opset` must be one the exporter writes and onnx knows, for a target that takes ONNX at all."""
    if opset is None:
        return
    if target_opset is None:
        raise DeployError(f"--opset: target {target} converts from PyTorch, not ONNX; drop --opset")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise DeployError(f"--opset {opset} is outside what the exporter writes: {MIN_OPSET}..{newest} "
                          f"(the default for {target} is {target_opset})")


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse before writing when the file system holding `folder` has less than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DeployError(f"not enough disk space in {folder} for {what}: {free / 2**20:.0f} MB free, about "
                          f"{needed / 2**20:.0f} MB needed; free some space or pass another --out")
