"""Per-op times of an ExecuTorch program from its own devtools: ETDump recorded at run time, read by Inspector.

The hook the profiling stage attributes to modules: `profile_ops(ETDumpRequest(...))` runs a built `.pte`
with event tracing on and returns one `OpTime` per op event — XNNPACK's own operators inside a delegate
("Fully Connected (NC, F32) GEMM #3"), ExecuTorch's portable kernels outside ("native_layer_norm.out") —
with every run's time. Given the artifact's `etrecord.bin` (export with `--option etrecord=true`), Inspector
maps each event back to the exported graph's nodes: `OpTime.module_hierarchy` and `stack_traces` then say
which `nn.Module` and source line the op came from, which is what module attribution needs. Without one, the
events carry only their names and debug handles.

`ExecuTorchRunner.profile_layers` (the interface of `runtimes.profiling`, which `bench --profile` and
`python -m deploy profile` call) runs this and hands each event on as a `NodeTime`. The program is built from
the PyTorch module, not from an ONNX graph, so its events name no ONNX nodes and the diagnosis stage lists
them by name and op type (unassigned to module groups); the ETRecord route above is the one that reaches
the modules.

The pip wheel of ExecuTorch 1.5 is built with its event tracer, so this runs wherever the program runs.
"""

from __future__ import annotations

import statistics
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import RuntimeAdapterError, first_line

# ETDump's events that time the runtime itself, not an op.
RUNTIME_EVENTS = ("Method::execute", "Method::init", "Program::load_method", "DELEGATE_CALL", "OPERATOR_CALL")


@dataclass(frozen=True)
class ETDumpRequest:
    program: Path  # the .pte file
    feed: np.ndarray  # one input batch, float32, at a batch the method serves
    runs: int = 10  # timed executions after one untimed warm-up
    method: str = "forward"
    etrecord: Path | None = None  # the artifact's etrecord.bin, for module attribution

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise RuntimeAdapterError(f"profile runs must be >= 1, not {self.runs}")


@dataclass(frozen=True)
class OpTime:
    name: str
    delegate: str | None  # "XnnpackBackend"; None for an op on the portable kernels
    times_ms: tuple[float, ...]  # one per timed run
    debug_handles: tuple[int, ...] = ()
    op_types: tuple[str, ...] = ()  # the exported graph's ops this event covers (with an ETRecord)
    module_hierarchy: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node -> module path (ETRecord)
    stack_traces: dict[str, str] = field(default_factory=dict)  # node -> source line (with an ETRecord)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def profile_ops(request: ETDumpRequest) -> list[OpTime]:
    """Run the program `1 + runs` times with ETDump on and return each op's times (the warm-up dropped)."""
    import torch
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(Path(request.program), enable_etdump=True)
        method = program.load_method(request.method)
    except Exception as exc:
        raise RuntimeAdapterError(f"cannot load {request.program} for profiling: {first_line(exc)}") from None
    x = torch.from_numpy(np.ascontiguousarray(request.feed, dtype=np.float32))
    for _ in range(1 + request.runs):
        method.execute([x])
    with tempfile.TemporaryDirectory(prefix="etdump-") as folder:
        etdump, debug = Path(folder) / "run.etdp", Path(folder) / "debug.bin"
        program.write_etdump_result_to_file(str(etdump), str(debug))
        with warnings.catch_warnings():  # one per graph node whose kwargs its debug schema does not record
            warnings.simplefilter("ignore", UserWarning)
            inspector = Inspector(etdump_path=str(etdump),
                                  etrecord=str(request.etrecord) if request.etrecord else None)
    return [_op_time(event) for block in inspector.event_blocks if block.name == "Execute"
            for event in block.events if event.perf_data is not None and event.name not in RUNTIME_EVENTS]


def _op_time(event) -> OpTime:
    raw = tuple(float(t) for t in event.perf_data.raw)
    return OpTime(
        name=event.name,
        delegate=event.delegate_backend_name or None,
        times_ms=raw[1:] if len(raw) > 1 else raw,
        debug_handles=tuple(_handles(event.debug_handles)),
        op_types=tuple(event.op_types or ()),
        module_hierarchy={str(k): tuple(str(m) for m in v) for k, v in (event.module_hierarchy or {}).items()},
        stack_traces={str(k): str(v) for k, v in (event.stack_traces or {}).items()},
    )


def _handles(handles) -> list[int]:
    if handles is None:
        return []
    return [int(h) for h in handles] if isinstance(handles, (list, tuple)) else [int(handles)]
