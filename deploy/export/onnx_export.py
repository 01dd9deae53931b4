"""PyTorch -> ONNX: the dynamo exporter with named I/O and a dynamic batch, checked and cleaned up."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from runtimes.base import first_line

from ..errors import DeployError
from ..passes import scopes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

if TYPE_CHECKING:
    from torch import nn


def export_onnx(model: nn.Module, input_size: tuple[int, ...], opset: int) -> onnx.ModelProto:
    """Export with `torch.onnx.export(dynamo=True)`; batch is dynamic, everything else static."""
    import torch  # here, not at the top: `inspect` and the graph tools need only onnx

    example = (torch.randn(2, *input_size),)
    batch = torch.export.Dim("batch", min=1, max=1024)
    sink = io.StringIO()
    try:
        # The exporter narrates each step on stdout; keep the CLI's output to what the user asked for.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model.eval(), example, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False,
            )
    except Exception as exc:
        raise DeployError(f"torch.onnx.export failed for opset {opset}: {first_line(exc)}") from exc
    if program is None:
        raise DeployError(f"torch.onnx.export returned no program for opset {opset}")
    proto = program.model_proto
    check(proto)
    return proto


@contextlib.contextmanager
def _quiet_logger(name: str):
    # The exporter logs a warning per optional torchvision op it cannot register (no CPU torchvision).
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def clean_up(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-code removal and shape inference with onnxslim; each node keeps its module scope."""
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(proto)
    scopes.restore(proto, slimmed)  # onnxslim drops node metadata; profiles and the debugger need it
    check(slimmed)
    return slimmed


def check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise DeployError(f"exported ONNX graph is invalid: {str(exc).splitlines()[0]}") from None


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        raise DeployError(f"{path} is not a readable ONNX model (it does not exist)") from None
    except Exception as exc:  # protobuf DecodeError and friends
        raise DeployError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if proto.ir_version == 0 or not proto.graph.node:
        # An empty file parses as an empty message: every real model has an IR version and nodes.
        raise DeployError(f"{path} is not an ONNX model (empty, or a protobuf without a graph)")
    return proto


def save_onnx(proto: onnx.ModelProto, path: Path) -> str:
    """Save (external data beyond protobuf's 2 GB limit) and return the file's sha256."""
    large = proto.ByteSize() > 1_900_000_000
    onnx.save_model(proto, str(path), save_as_external_data=large,
                    location=f"{Path(path).name}.data" if large else None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                     for n in proto.graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def opset_of(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
