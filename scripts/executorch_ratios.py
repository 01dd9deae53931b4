"""ExecuTorch latency as ratios to ONNX Runtime fp32, per model and batch, from one bench results file.

    python -m deploy bench --device scripts/profiles/executorch_vs_onnxruntime.toml --json et-vs-ort.json
    python scripts/executorch_ratios.py et-vs-ort.json [--metric min]

A ratio below 1 means ExecuTorch is faster. A cell that failed or did not pass parity is shown as such,
never as a ratio: an engine whose parity could not run is not reported as fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.bench.results import ResultRow, load_results  # noqa: E402

BASELINE = ("onnxruntime", "fp32")
CANDIDATES = (("executorch", "fp32"), ("executorch", "int8"))


def latency(row: ResultRow | None, metric: str) -> float | None:
    """The row's latency statistic, or None unless it ran and passed parity."""
    if row is None or row.status != "ok" or row.latency_ms is None or not (row.parity and row.parity.passed):
        return None
    return float(getattr(row.latency_ms, metric))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--metric", default="p50", choices=("p50", "p90", "mean", "min"))
    args = parser.parse_args(argv)
    rows = {(r.model, r.target, r.precision, r.batch): r for r in load_results(args.results).results}
    cells = sorted({(model, batch) for model, _, _, batch in rows})
    header = f"{'model':<18} {'batch':>5} {'ort fp32 ms':>12}" + "".join(
        f" {f'et {p} ms':>11} {f'et {p}/ort':>10}" for _, p in CANDIDATES)
    print(f"{args.metric} latency; ratios to ONNX Runtime fp32 measured in the same run\n{header}")
    for model, batch in cells:
        base = latency(rows.get((model, *BASELINE, batch)), args.metric)
        line = f"{model:<18} {batch:>5} {_ms(base):>12}"
        for target, precision in CANDIDATES:
            ours = latency(rows.get((model, target, precision, batch)), args.metric)
            ratio = f"{ours / base:.2f}" if ours is not None and base else "-"
            line += f" {_ms(ours):>11} {ratio:>10}"
        print(line)
    return 0


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
