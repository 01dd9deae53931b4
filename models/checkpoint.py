"""Loading checkpoints: safe unpickling (`.pth`, `.pt`, `.bin`), safetensors, container unwrapping, strict key
matching."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError

# Official HVT and ViT-ResNAS checkpoints pickle their argparse.Namespace next to the weights;
# that class (plain attribute storage) is the only non-tensor type we allow the unpickler to build.
SAFE_CHECKPOINT_GLOBALS: list[Any] = [argparse.Namespace]


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    sha256: str
    container_key: str | None  # e.g. "model" or "model_ema"; None for a bare state dict
    num_tensors: int


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _saved_by_torch(head: bytes) -> bool:
    """Whether a file's first bytes are what torch.save writes: a zip archive (PyTorch >= 1.6) or a pickle of
    protocol 2 to 5 (the legacy format). Anything else is refused before torch.load, whose unpickler reads text
    or noise as opcodes and fails with whatever they lead to (`IndexError: pop from empty list`, KeyError ...)."""
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def read_checkpoint(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` with a clear error for every way a file can be wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"weights path {path} is not a file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise CheckpointError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if not _saved_by_torch(head):
        shown = "it is empty" if not head else f"it starts with {head!r}"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({shown}, while torch.save writes a zip "
                              "archive or a pickle): pass the .pth file the model was saved to")
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS), warnings.catch_warnings():
            # A legacy file pickled with protocol 3-5 loads, after a warning that only asks for bug reports.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch < 2.13: "Unsupported global: GLOBAL x.y"; 2.13: "unsupported GLOBAL x.y whose module x is blocked".
        foreign = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(exc))
        if foreign:
            raise CheckpointError(
                f"{path} pickles {foreign.group(1)}, which is neither a tensor nor argparse.Namespace; "
                "refusing to unpickle untrusted code: re-save it as a plain state_dict"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        reason = detail.group(1).strip().splitlines()[0] if detail else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or not a .pth file: {reason})"
        ) from None
    except Exception as exc:  # a corrupt pickle fails in whatever way its bytes lead the unpickler
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first_line}"
        ) from None


def unwrap_state_dict(
    obj: Any, container_keys: Iterable[str], use_ema: bool | None = None
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Find the weights inside a training container ({'model': ..., 'optimizer': ...}) or a bare dict.

    `use_ema`: None follows `container_keys` order, True requires 'model_ema', False skips it.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict or container")
    keys = list(container_keys)
    if use_ema is True:
        if "model_ema" not in obj:
            raise CheckpointError(
                "checkpoint has no 'model_ema' weights "
                f"(it holds: {', '.join(map(str, obj.keys()))}); drop --ema"
            )
        keys = ["model_ema"]
    elif use_ema is False:
        keys = [k for k in keys if k != "model_ema"]
    for key in keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return _strip_prefix(dict(inner)), key
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefix(dict(obj)), None
    raise CheckpointError(
        "checkpoint is a container without model weights under any of "
        f"{keys} (it holds: {', '.join(map(str, obj.keys()))})"
    )


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DistributedDataParallel saves every key under 'module.'.
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _summarise(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "the model") -> None:
    """Strict load that names every missing, unexpected and mis-shaped key in one error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {_summarise(misshaped, 4)}")
    if problems:
        raise CheckpointError(
            f"checkpoint does not match {what} (another variant or configuration?): " + "; ".join(problems)
        )
    # load_state_dict would copy a complex tensor into a real parameter, silently dropping its imaginary part.
    complex_ = [f"{k} ({v.dtype})" for k, v in state_dict.items() if v.is_complex() and not expected[k].is_complex()]
    if complex_:
        raise CheckpointError(
            f"checkpoint holds complex values in {len(complex_)} tensor(s) where the model's are real: "
            f"{_summarise(complex_, 3)}; loading them would drop their imaginary parts (not weights for this model)"
        )
    model.load_state_dict(state_dict, strict=True)


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or inf (a corrupt file or a diverged run), naming the first such tensors."""
    bad = [name for name, tensor in state_dict.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s): "
                              f"{_summarise(bad, 3)}; the checkpoint is corrupt or comes from a diverged run")


SAFETENSORS_SUFFIX = ".safetensors"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` file's tensors (the safetensors library: no pickle at all)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist" if not path.exists()
                              else f"weights path {path} is not a file")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {detail}") from None


def read_weights(path: Path, container_keys: Iterable[str] = ("model", "state_dict"),
                 use_ema: bool | None = None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """The state dict in a checkpoint file of any supported format, and where it came from."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        if use_ema:
            raise CheckpointError(f"{path} is a safetensors file: it holds one set of weights, so --ema does not apply")
        state_dict, container_key = read_safetensors(path), None
    else:
        state_dict, container_key = unwrap_state_dict(read_checkpoint(path), container_keys, use_ema)
    return state_dict, CheckpointInfo(path=str(path), sha256=file_sha256(path), container_key=container_key,
                                      num_tensors=len(state_dict))


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    container_keys: Iterable[str] = ("model", "state_dict"),
    state_dict_filter=None,
    use_ema: bool | None = None,
) -> CheckpointInfo:
    state_dict, info = read_weights(Path(path), container_keys, use_ema)
    if state_dict_filter is not None:
        state_dict = state_dict_filter(state_dict, model)
    check_finite(state_dict, path)
    load_state_dict_strict(model, state_dict)
    return CheckpointInfo(path=info.path, sha256=info.sha256, container_key=info.container_key,
                          num_tensors=len(state_dict))
