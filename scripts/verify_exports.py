"""Export a matrix of (model, target, precision) through the real pipeline and print parity per cell.

Not a test (it takes tens of minutes on 2 cores): the record behind the claims in release notes.

    python scripts/verify_exports.py --target openvino --precision fp32 bf16 fp16 int8 --json out.json
    python scripts/verify_exports.py --target coreml --precision fp16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import models
from deploy.errors import DeployError
from deploy.export import ExportRequest, export
from deploy.export.onnx_cache import OnnxCache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every 224-input variant")
    parser.add_argument("--target", required=True)
    parser.add_argument("--precision", nargs="+", default=["fp32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    names = args.models or [i.name for i in models.list_models() if i.input_size[-1] == 224]
    rows, failed = [], 0
    with tempfile.TemporaryDirectory() as out:
        # Every precision of a model rewrites the same clean export: make it once.
        onnx_cache = OnnxCache(Path(out))
        for name in names:
            for precision in args.precision:
                start = time.perf_counter()
                row = {"model": name, "target": args.target, "precision": precision}
                try:
                    result = export(ExportRequest(name, args.target, precision, out=Path(out), batch=tuple(args.batch),
                                                  gated=False), onnx_cache=onnx_cache)
                    parity = result.manifest.parity
                    row.update({k: getattr(parity, k) for k in ("passed", "skipped", "max_abs_rel", "cosine",
                                                                "top1_agreement")})
                    row["batches"] = [b["batch"] for b in parity.batches or []]
                except DeployError as exc:
                    row.update(passed=False, error=str(exc))
                row["seconds"] = round(time.perf_counter() - start, 1)
                failed += row.get("passed") is False
                rows.append(row)
                print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    skipped = sum(bool(r.get("skipped")) for r in rows)
    print(f"{len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped (built; parity needs the device)")
    return 1 if failed else 0


def _line(row: dict) -> str:
    if row.get("error"):
        return f"{row['model']:<18} {row['target']:<10} {row['precision']:<5} ERROR {row['error']}"
    if row.get("skipped"):
        return f"{row['model']:<18} {row['target']:<10} {row['precision']:<5} built; parity skipped ({row['skipped']})"
    return (f"{row['model']:<18} {row['target']:<10} {row['precision']:<5} "
            f"{'PASS' if row['passed'] else 'FAIL'} max|err|/scale {row['max_abs_rel']:.2e} "
            f"cosine {row['cosine']:.5f} top1 {row['top1_agreement']:.2f} batches {row['batches']} "
            f"({row['seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())
