"""The benchmark harness: export each (model, target, precision), gate on parity, then time it.

Method: warm up for a fixed time (and at least a few runs), then time `runs` inferences, rotating
among several input buffers so caches do not flatter; report percentiles over per-run latencies.
A cell that fails (export error, parity failure, missing runtime) is recorded and the run goes on.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import models
import runtimes

from . import artifacts
from .data import seeded_batch
from .doctor import probe
from .errors import DeployError, ParityError
from .export import ExportRequest, export, load_artifact
from .targets import get_target


@dataclass
class BenchSettings:
    warmup_s: float = 1.0
    min_warmup_runs: int = 3
    runs: int = 50
    buffers: int = 4
    threads: int | None = None
    seed: int = 0


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99),
            "mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max())}


def time_runner(runner, input_name: str, input_size: tuple[int, ...], batch: int,
                settings: BenchSettings) -> list[float]:
    """Per-inference wall latencies in ms, after a time-based warm-up."""
    feeds = [{input_name: seeded_batch(input_size, batch, settings.seed + 100 + i)}
             for i in range(settings.buffers)]
    start, done = time.perf_counter(), 0
    while done < settings.min_warmup_runs or time.perf_counter() - start < settings.warmup_s:
        runner.infer(feeds[done % len(feeds)])
        done += 1
    samples = []
    for i in range(settings.runs):
        t0 = time.perf_counter()
        runner.infer(feeds[i % len(feeds)])
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def environment(threads: int | None) -> dict[str, Any]:
    import onnx
    import torch

    env = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_model(),
        "cpu_count": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
    }
    for name in runtimes.target_names():
        _, status = probe(name)
        env[f"runtime:{name}"] = status.version if status.available else None
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_cell(model: str, target: str, precision: str | None, batch: int, settings: BenchSettings,
               out: Path, onnx_cache: dict, passes: str | None = "default",
               weights: str | None = None) -> dict[str, Any]:
    info = models.get_model_info(model)
    profile = get_target(target)
    precision = precision or profile.default_precision
    result: dict[str, Any] = {
        "model": info.name, "family": info.family, "target": target, "precision": precision,
        "batch": batch, "status": "ok", "error": None, "latency_ms": None, "throughput_ips": None,
        "parity": None, "params": round(info.params_m * 1e6), "macs": round(info.macs_g * 1e9),
        "runs": 0, "weights": weights or "random-init",
    }
    try:
        status = runtimes.get_backend(target).availability()
        if not status.available:
            return {**result, "status": "unavailable", "error": status.reason}
        exported = export(
            ExportRequest(info.name, target, precision, weights=weights, out=out, passes=passes,
                          batch=tuple(sorted({1, batch})), threads=settings.threads, seed=settings.seed),
            onnx_cache=onnx_cache,
        )
        result["parity"] = _parity_fields(exported.manifest["parity"])
        result["passes"] = exported.manifest.get("onnx", {}).get("passes", [])
        if not status.can_run:
            return {**result, "status": "unavailable", "error": exported.manifest["parity"]["skipped"]}
        runner, _ = load_artifact(exported.artifact_dir, threads=settings.threads)
        with runner:
            samples = time_runner(runner, runner.input_specs[0].name if runner.input_specs else "input",
                                  info.input_size, batch, settings)
        stats = latency_stats(samples)
        result.update(latency_ms=stats, throughput_ips=batch * 1e3 / stats["mean"], runs=len(samples))
    except ParityError as exc:
        result.update(status="failed", error=str(exc))
    except (DeployError, models.ModelError, runtimes.RuntimeAdapterError) as exc:
        result.update(status="failed", error=str(exc))
    return result


def _parity_fields(parity: dict) -> dict[str, Any]:
    keys = ("max_abs", "max_abs_rel", "cosine", "top1_agreement", "passed", "skipped")
    return {k: parity[k] for k in keys if k in parity}


def run_bench(model_names: list[str], targets: list[str], batches: list[int], precision: str | None,
              settings: BenchSettings, out: Path, passes: str | None = "default",
              weights: str | None = None, on_result=None) -> dict[str, Any]:
    names = [models.resolve_name(m) for m in model_names]  # fail fast on a typo, before any export
    for target in targets:
        get_target(target)
    artifacts.ensure_writable(out)
    results = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".bench-onnx-") as cache_dir:
        cache = {"dir": cache_dir}
        for name in names:
            for target in targets:
                for batch in batches:
                    cell = bench_cell(name, target, precision, batch, settings, out, cache, passes, weights)
                    results.append(cell)
                    if on_result:
                        on_result(cell)
    return {"environment": environment(settings.threads),
            "settings": {"warmup_s": settings.warmup_s, "runs": settings.runs, "buffers": settings.buffers,
                         "seed": settings.seed, "passes": passes},
            "results": results}


def format_table(results: list[dict[str, Any]]) -> str:
    header = ["model", "target", "prec", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "mean ms",
              "img/s", "GMACs", "max|err|/scale", "cosine", "top1"]
    rows = [header]
    for r in results:
        lat = r.get("latency_ms") or {}
        parity = r.get("parity") or {}
        rows.append([
            r["model"], r["target"], r["precision"], str(r["batch"]), r["status"],
            *(f"{lat[k]:.2f}" if k in lat else "-" for k in ("p50", "p90", "p99", "mean")),
            f"{r['throughput_ips']:.1f}" if r.get("throughput_ips") else "-",
            f"{r['macs'] / 1e9:.2f}",
            f"{parity['max_abs_rel']:.1e}" if parity.get("max_abs_rel") is not None else "-",
            f"{parity['cosine']:.6f}" if parity.get("cosine") is not None else "-",
            f"{parity['top1_agreement']:.2f}" if parity.get("top1_agreement") is not None else "-",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {r['model']}/{r['target']}/{r['precision']}/b{r['batch']}: {r['error']}"
                for r in results if r["status"] != "ok"]
    return "\n".join(lines + (["", "not ok:"] + failures if failures else []))
