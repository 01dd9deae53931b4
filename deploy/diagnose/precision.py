"""`debug-precision`'s report: the per-layer error (`deploy.export.layer_error`, which `--precision auto` ranks
layers by too) as the lines the command prints."""

from __future__ import annotations

import math

from ..export.layer_error import FLOOR_DB, LayerError, PrecisionReport


def format_report(report: PrecisionReport, top: int = 5) -> str:
    def line(layer: LayerError) -> str:
        where = layer.module if layer.module else "(top level)"
        drop = "from exact" if math.isinf(layer.drop_db) else f"-{layer.drop_db:4.1f} dB"
        return (f"  {layer.node:<34} {layer.op_type:<18} {where:<30} SQNR {layer.sqnr_db:6.1f} dB ({drop})  "
                f"adds {100 * layer.added_noise:.4f}% noise  cosine {layer.cosine:.5f}")

    lines = [f"{report.compared} tensors compared with fp32 over {report.samples} input(s)"]
    final = report.output()
    if final is not None:
        lines.append(f"output: SQNR {final.sqnr_db:.1f} dB, cosine {final.cosine:.6f}")
    jump = report.first_jump
    lines.append(f"first layer taking the signal under {FLOOR_DB:g} dB SQNR: "
                 + (f"{jump.node} ({jump.op_type}) in {jump.module or '(top level)'}" if jump else "none"))
    lines.append(f"the {top} layers adding the most error:")
    lines += [line(layer) for layer in report.worst(top)]
    return "\n".join(lines)
