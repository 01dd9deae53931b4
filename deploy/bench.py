"""The benchmark harness: export each (model, target, precision), gate on parity, then time it.

Method (README, "Measurement method"): warm up for a fixed time (and at least a few runs), then time
`runs` inferences (or as many as fit in `duration_s`), rotating among several input buffers so caches
do not flatter; report percentiles over per-run latencies, the number of runs they rest on, peak memory,
and optionally top-1/top-5 on labelled images and (on a Jetson) board power.

The matrix is (model x target x precision x batch). Each (model, target, precision) is exported once
and timed at every batch; each finished cell is written to the results JSON at once, so an interrupted
run loses nothing and `resume=True` runs only the cells the file lacks. A cell that fails (export error,
parity failure, missing runtime) is recorded with its error and the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import models
import runtimes
from runtimes.base import first_line

from . import fileio
from .data import datasets
from .doctor import probe
from .errors import DeployError
from .export import accuracy
from .export.onnx_cache import OnnxCache
from .export.request import ExportRequest
from .export.stage import export, load_artifact
from .export.targets import get_target
from .results import CellKey, cell_key, load_results  # noqa: F401 - bench's public API too
from .results import format_or_dash as _num
from .timing import LatencyStats, TimingSettings, input_feeds, timed_runs, warm_up

RESULTS_SCHEMA = 2
# Settings whose change makes old and new cells incomparable: a resumed run must match them.
RESUME_KEYS = ("warmup_s", "runs", "duration_s", "buffers", "seed", "passes", "threads", "dataset",
               "dataset_limit", "weights", "device")


@dataclass
class BenchSettings:
    warmup_s: float = 1.0
    min_warmup_runs: int = 3
    runs: int = 50
    duration_s: float | None = None  # set: timed runs go on this long (at least `min_runs`) instead of `runs`
    min_runs: int = 5
    buffers: int = 4
    threads: int | None = None
    seed: int = 0
    dataset: str | None = None  # "digits" or a class-subfolder image folder: top-1/top-5 per engine
    dataset_limit: int | None = None
    power: bool = False  # sample tegrastats during the timed runs (Jetson)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def timing(self) -> TimingSettings:
        return TimingSettings(warmup_s=self.warmup_s, min_warmup_runs=self.min_warmup_runs, runs=self.runs,
                              duration_s=self.duration_s, min_runs=self.min_runs, buffers=self.buffers,
                              seed=self.seed)


# ---------------------------------------------------------------- memory

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

    def snapshot(self) -> dict[str, Any]:
        peak = _peak_rss_mb()
        record = {"rss_peak_mb": peak, "rss_at_load_mb": self.base_mb, "method": self.method,
                  "rss_growth_mb": peak - self.base_mb if peak is not None and self.base_mb is not None else None}
        gpu = _gpu_used_mb()
        if gpu is not None and self.gpu_base_mb is not None:
            # Device-wide use after the timed runs, less what was in use before the engine loaded.
            record["gpu_used_mb"] = max(0.0, gpu - self.gpu_base_mb)
        return record


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so the export's leftovers do not hide the
    engine's own allocations: without it, the engine reuses memory the export freed and its growth reads ~0."""
    import gc

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


# ---------------------------------------------------------------- environment

def environment(threads: int | None, device: dict[str, Any] | None = None) -> dict[str, Any]:
    import onnx
    import torch

    env = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_model(),
        "cpu_count": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "numpy": np.__version__,
    }
    for name in runtimes.target_names():
        _, status = probe(name)
        env[f"runtime:{name}"] = status.version if status.available else None
    if device is not None:
        env["device"] = device
    return env


def _cpu_model() -> str:
    from .profiles import cpu_model

    return cpu_model()


# ---------------------------------------------------------------- one (model, target, precision)

@functools.cache
def _param_count(name: str) -> int:
    from models.complexity import count_params, meta_model

    return count_params(meta_model(name))


def _weights_label(info, weights: str | None) -> str:
    if weights:
        return weights
    path = models.default_weights_path(info)
    return f"shipped:{path.relative_to(Path(models.__file__).parent)}" if path else "random-init"


def empty_row(info, target: str, precision: str, batch: int, weights: str | None) -> dict[str, Any]:
    return {
        "model": info.name, "family": info.family, "target": target, "precision": precision, "batch": batch,
        "status": "ok", "error": None, "latency_ms": None, "throughput_ips": None, "parity": None,
        "accuracy": None, "memory": None, "power": None, "params": _param_count(info.name),
        "macs": round(info.macs_g * 1e9), "published_top1": info.published_top1, "runs": 0,
        "warmup_runs": 0, "timed_s": None, "weights": _weights_label(info, weights),
    }


class _References:
    """PyTorch's logits on the dataset, computed once per model and shared by all its engines."""

    def __init__(self, settings: BenchSettings):
        self.settings = settings
        self._cache: dict[str, tuple[datasets.LabeledSet, np.ndarray]] = {}

    def get(self, info, model) -> tuple[datasets.LabeledSet, np.ndarray]:
        if info.name not in self._cache:
            dataset = datasets.load_dataset(self.settings.dataset, info, self.settings.dataset_limit)
            self._cache[info.name] = (dataset, accuracy.torch_logits(model, dataset.images))
        return self._cache[info.name]


def bench_group(model: str, target: str, precision: str | None, batches: list[int], settings: BenchSettings,
                out: Path, onnx_cache: OnnxCache, passes: str | None = "default", weights: str | None = None,
                references: _References | None = None) -> list[dict[str, Any]]:
    """Export one engine, then time it at each batch: one result row per batch, never an exception."""
    info = models.get_model_info(model)
    precision = precision or get_target(target).default_precision
    rows = [empty_row(info, target, precision, b, weights) for b in batches]

    def mark(status: str, error: str, **extra: Any) -> list[dict[str, Any]]:
        return [{**row, **extra, "status": status, "error": error} for row in rows]

    try:
        status = runtimes.get_backend(target).availability()
        if not status.available:
            return mark("unavailable", status.reason)
        exported = export(
            ExportRequest(info.name, target, precision, weights=weights, out=out, passes=passes,
                          batch=tuple(sorted({1, *batches})), threads=settings.threads, seed=settings.seed),
            onnx_cache=onnx_cache,
        )
        shared = {"parity": _parity_fields(exported.manifest["parity"]),
                  "passes": exported.manifest.get("onnx", {}).get("passes", [])}
        if not status.can_run:
            return mark("unavailable", exported.manifest["parity"]["skipped"], **shared)
        rows = [{**row, **shared} for row in rows]
        return _run_engine(exported, info, rows, settings, references)
    except (DeployError, models.ModelError, runtimes.RuntimeAdapterError) as exc:
        return mark("failed", str(exc), **({"parity": rows[0]["parity"]} if rows[0]["parity"] else {}))
    except Exception as exc:  # a runtime's own exception type mid-run: record it, the matrix goes on
        return mark("failed", f"{type(exc).__name__}: {first_line(exc)}")


def _run_engine(exported, info, rows: list[dict[str, Any]], settings: BenchSettings,
                references: _References | None) -> list[dict[str, Any]]:
    watch = MemoryWatch()
    runner, _ = load_artifact(exported.artifact_dir, threads=settings.threads)
    with runner:
        input_name = runner.input_specs[0].name if runner.input_specs else "input"
        for row in rows:  # ascending batch: the running peak is this batch's peak
            try:
                row.update(_time_batch(runner, input_name, info, row["batch"], settings))
                row["memory"] = watch.snapshot()
            except (DeployError, runtimes.RuntimeAdapterError) as exc:
                row.update(status="failed", error=str(exc))
            except Exception as exc:  # e.g. a batch the engine's profile cannot take: the other batches go on
                row.update(status="failed", error=f"{type(exc).__name__}: {first_line(exc)}")
        if settings.dataset and references is not None:
            try:
                record = _accuracy(runner, input_name, info, exported.model, max(r["batch"] for r in rows),
                                   references)
            except Exception as exc:  # the timings stand even if the accuracy pass fails
                record = {"dataset": settings.dataset, "error": f"{type(exc).__name__}: {first_line(exc)}"}
            for row in rows:
                row["accuracy"] = record
    return rows


def _time_batch(runner, input_name: str, info, batch: int, settings: BenchSettings) -> dict[str, Any]:
    timing = settings.timing
    feeds = input_feeds(input_name, info.input_size, batch, timing)
    load_before = _load_average()
    warmup_runs = warm_up(runner, feeds, timing)
    with _power(settings) as sampler:
        start = time.perf_counter()
        samples = timed_runs(runner, feeds, timing)
        timed_s = time.perf_counter() - start
    stats = LatencyStats.of(samples)
    return {"latency_ms": asdict(stats), "throughput_ips": batch * 1e3 / stats.mean, "runs": len(samples),
            "warmup_runs": warmup_runs, "timed_s": timed_s, "load_average": [load_before, _load_average()],
            "power": sampler.summary(timed_s, len(samples) * batch) if sampler else None}


def _load_average() -> float | None:
    """The 1-minute load average: other processes competing for the cores show up here, not in the latencies' spread."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def _power(settings: BenchSettings) -> Iterator[Any]:
    if not settings.power:
        yield None
        return
    from .profiles import PowerSampler

    with PowerSampler() as sampler:
        yield sampler


def _accuracy(runner, input_name: str, info, model, batch: int, references: _References) -> dict[str, Any]:
    dataset, reference = references.get(info, model)
    output = runner.output_names[0] if runner.output_names else "logits"
    logits = accuracy.predict(lambda x: runner.infer({input_name: x})[output], dataset.images, batch)
    return {**accuracy.accuracy_record(logits, reference, dataset), "batch": batch}


def _parity_fields(parity: dict) -> dict[str, Any]:
    keys = ("max_abs", "max_abs_rel", "cosine", "top1_agreement", "passed", "skipped")
    return {k: parity[k] for k in keys if k in parity}


# ---------------------------------------------------------------- the matrix, with incremental writes and resume

def plan_matrix(names: list[str], targets: list[str], batches: list[int], precision: str | None,
                precisions: dict[str, tuple[str, ...]] | None = None) -> list[CellKey]:
    """Every cell in run order; `precision` overrides the per-target list, which defaults to each target's default."""
    cells = []
    for name in names:
        for target in targets:
            profile = get_target(target)
            chosen = ((precision,) if precision else (precisions or {}).get(target) or (profile.default_precision,))
            for prec in chosen:
                for batch in sorted(set(batches)):
                    cells.append((name, target, prec, batch))
    return cells


class Progress:
    """What the harness reports while it runs; the CLI's rich bar implements it."""

    def start(self, total: int, done: int) -> None: ...

    def cell_started(self, key: CellKey) -> None: ...

    def cell_finished(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ResultsFile:
    """The results JSON, rewritten atomically after every finished cell (plus optional CSV/markdown)."""

    def __init__(self, path: Path | None, csv_path: Path | None = None, md_path: Path | None = None):
        self.path, self.csv_path, self.md_path = path, csv_path, md_path

    def write(self, report: dict[str, Any]) -> None:
        report["updated"] = _now()
        if self.path:
            fileio.write_json_atomic(self.path, report)
        if self.csv_path:
            fileio.write_text_atomic(self.csv_path, to_csv(report["results"]))
        if self.md_path:
            fileio.write_text_atomic(self.md_path, to_markdown(report["results"]))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _resumed_rows(path: Path, settings_json: dict[str, Any], retry_failed: bool) -> tuple[dict, dict[CellKey, dict]]:
    old = load_results(path)
    differ = [k for k in RESUME_KEYS if old.get("settings", {}).get(k) != settings_json.get(k)]
    if differ:
        detail = ", ".join(f"{k}={old.get('settings', {}).get(k)!r} there, {settings_json.get(k)!r} now"
                           for k in differ)
        raise DeployError(f"--resume: {path} was run with other settings ({detail}); "
                          "repeat its settings or write a new --json")
    rows: dict[CellKey, dict] = {}
    for row in old["results"]:
        if retry_failed and row.get("status") == "failed":
            continue
        rows.setdefault(cell_key(row), row)  # a cell is kept once, even if a file somehow lists it twice
    return old, rows


def run_bench(model_names: list[str], targets: list[str], batches: list[int], precision: str | None,
              settings: BenchSettings, out: Path, passes: str | None = "default",
              weights: str | None = None, on_result: Callable[[dict], None] | None = None, *,
              precisions: dict[str, tuple[str, ...]] | None = None, device: dict[str, Any] | None = None,
              results: ResultsFile | None = None, resume: bool = False, retry_failed: bool = False,
              progress: Progress | None = None) -> dict[str, Any]:
    """Run the matrix; returns the results report (also written to `results` after every cell)."""
    names = [models.resolve_name(m) for m in model_names]  # fail fast on a typo, before any export
    for target in targets:
        get_target(target)
    if settings.dataset:
        for name in names:
            _check_dataset(settings.dataset, models.get_model_info(name))
    fileio.ensure_writable(out)
    results = results or ResultsFile(None)
    plan = plan_matrix(names, targets, batches, precision, precisions)
    settings_json = {**settings.to_json(), "passes": passes, "weights": weights,
                     "device": (device or {}).get("profile")}
    report: dict[str, Any] = {"schema": RESULTS_SCHEMA, "created": _now(), "complete": False,
                              "environment": environment(settings.threads, device), "settings": settings_json,
                              "results": []}
    rows: dict[CellKey, dict] = {}
    if resume and results.path and results.path.exists():
        old, rows = _resumed_rows(results.path, settings_json, retry_failed)
        report.update(created=old.get("created", report["created"]), environment=old.get("environment", {}),
                      resumed=[*old.get("resumed", []), _now()])
    progress = progress or Progress()
    progress.start(len(plan), sum(1 for key in plan if key in rows))
    try:
        _run_plan(plan, rows, report, settings, out, passes, weights, results, progress, on_result)
    finally:
        progress.close()
    report["complete"] = True
    report["results"] = _ordered(plan, rows)
    results.write(report)
    return report


def _check_dataset(spec: str, info) -> None:
    """Refuse a dataset that cannot serve a model before any export, not once per cell."""
    classes = int(info.config.get("num_classes", 1000))
    if spec not in datasets.SHIPPED:
        found = len(datasets.class_folders(Path(spec))[0])
        if found > classes:
            raise DeployError(f"--dataset {spec} has {found} classes; {info.name} predicts {classes}")
        return
    if classes != 10:
        raise DeployError(f"--dataset {spec} holds 10 digit classes; {info.name} predicts {classes} "
                          "(use it with hvt_digits, or pass an image folder)")


def _ordered(plan: list[CellKey], rows: dict[CellKey, dict]) -> list[dict]:
    planned = set(plan)
    return [rows[k] for k in plan if k in rows] + [row for k, row in rows.items() if k not in planned]


def _run_plan(plan, rows, report, settings, out, passes, weights, results, progress, on_result) -> None:
    references = _References(settings) if settings.dataset else None
    groups: dict[tuple[str, str, str], list[int]] = {}
    for model, target, prec, batch in plan:
        if (model, target, prec, batch) not in rows:
            groups.setdefault((model, target, prec), []).append(batch)
    with tempfile.TemporaryDirectory(dir=out, prefix=".bench-onnx-") as cache_dir:
        cache = OnnxCache(Path(cache_dir))  # holds one model's graphs at a time: the plan is model-major
        for (model, target, prec), batches in groups.items():
            progress.cell_started((model, target, prec, batches[0]))
            for row in bench_group(model, target, prec, batches, settings, out, cache, passes, weights, references):
                rows[cell_key(row)] = row
                report["results"] = _ordered(plan, rows)
                results.write(report)
                progress.cell_finished(row)
                if on_result:
                    on_result(row)


# ---------------------------------------------------------------- output formats

def format_table(results: list[dict[str, Any]]) -> str:
    with_acc = any(r.get("accuracy") for r in results)
    header = ["model", "target", "prec", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "mean ms",
              "img/s", "runs", "GMACs", "max|err|/scale", "cosine", "top1"]
    header += ["acc@1", "torch@1", "agree"] if with_acc else []
    rows = [header]
    for r in results:
        lat = r.get("latency_ms") or {}
        parity = r.get("parity") or {}
        row = [
            r["model"], r["target"], r["precision"], str(r["batch"]), r["status"],
            *(f"{lat[k]:.2f}" if k in lat else "-" for k in ("p50", "p90", "p99", "mean")),
            f"{r['throughput_ips']:.1f}" if r.get("throughput_ips") else "-", str(r.get("runs") or "-"),
            f"{r['macs'] / 1e9:.2f}",
            f"{parity['max_abs_rel']:.1e}" if parity.get("max_abs_rel") is not None else "-",
            f"{parity['cosine']:.6f}" if parity.get("cosine") is not None else "-",
            f"{parity['top1_agreement']:.2f}" if parity.get("top1_agreement") is not None else "-",
        ]
        if with_acc:
            acc = r.get("accuracy") or {}
            row += [f"{100 * acc[k]:.2f}" if acc.get(k) is not None else "-"
                    for k in ("top1", "reference_top1", "agreement")]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {r['model']}/{r['target']}/{r['precision']}/b{r['batch']}: {r['error']}"
                for r in results if r["status"] != "ok"]
    return "\n".join(lines + (["", "not ok:"] + failures if failures else []))


CSV_COLUMNS = ("model", "family", "target", "precision", "batch", "status", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
               "mean_ms", "std_ms", "min_ms", "max_ms", "throughput_ips", "runs", "params", "macs",
               "rss_peak_mb", "rss_growth_mb", "gpu_used_mb", "parity_passed", "max_abs_rel", "cosine", "top1", "top5",
               "reference_top1", "reference_top5", "agreement", "mean_power_w", "energy_mj_per_image", "error")


def flat_row(r: dict[str, Any]) -> dict[str, Any]:
    lat, parity = r.get("latency_ms") or {}, r.get("parity") or {}
    acc, mem, power = r.get("accuracy") or {}, r.get("memory") or {}, r.get("power") or {}
    flat = {k: r.get(k) for k in ("model", "family", "target", "precision", "batch", "status", "throughput_ips",
                                   "runs", "params", "macs", "error")}
    flat.update({f"{k}_ms": lat.get(k) for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")})
    flat.update(rss_peak_mb=mem.get("rss_peak_mb"), rss_growth_mb=mem.get("rss_growth_mb"),
                gpu_used_mb=mem.get("gpu_used_mb"),
                parity_passed=parity.get("passed"), max_abs_rel=parity.get("max_abs_rel"),
                cosine=parity.get("cosine"), mean_power_w=power.get("mean_w"),
                energy_mj_per_image=power.get("energy_mj_per_image"))
    flat.update({k: acc.get(k) for k in ("top1", "top5", "reference_top1", "reference_top5", "agreement")})
    return flat


def to_csv(results: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: "" if v is None else v for k, v in flat_row(r).items()})
    return buffer.getvalue()


def to_markdown(results: list[dict[str, Any]]) -> str:
    header = ["model", "target", "precision", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "img/s", "runs",
              "GMACs", "peak RSS MB", "engine MB", "top-1", "torch top-1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        f = flat_row(r)
        cells = [f["model"], f["target"], f["precision"], str(f["batch"]), f["status"],
                 *(_num(f[f"{k}_ms"], ".2f") for k in ("p50", "p90", "p99")), _num(f["throughput_ips"], ".1f"),
                 str(f["runs"] or "-"), _num(f["macs"] / 1e9, ".2f"), _num(f["rss_peak_mb"], ".0f"),
                 _num(f["rss_growth_mb"], ".0f"),
                 _num(f["top1"] * 100 if f["top1"] is not None else None, ".2f"),
                 _num(f["reference_top1"] * 100 if f["reference_top1"] is not None else None, ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the CLI's progress bar

class LinePrinter(Progress):
    """One plain line per finished cell on stderr (logs, CI, --no-progress)."""

    def start(self, total: int, done: int) -> None:
        if done:
            _say(f"resuming: {done} of {total} cells already in the results file")

    def cell_finished(self, row: dict[str, Any]) -> None:
        _say(cell_line(row))


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def cell_line(row: dict[str, Any]) -> str:
    lat = row.get("latency_ms") or {}
    extra = f"p50 {lat['p50']:.2f} ms ({row['runs']} runs)" if lat else (row.get("error") or "")
    acc = row.get("accuracy")
    if acc and acc.get("top1") is not None:
        extra += f", top-1 {100 * acc['top1']:.2f}% (torch {100 * acc['reference_top1']:.2f}%)"
    elif acc:
        extra += f", accuracy failed: {acc.get('error')}"
    return f"  {row['model']} {row['target']} {row['precision']} b{row['batch']}: {row['status']} {extra}"


class RichProgress(Progress):
    """A rich progress bar over the matrix on stderr, with one line per finished cell above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.console = Console(stderr=True)
        self.bar = Bar(
            TextColumn("[bold]bench[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.task = None

    def start(self, total: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("", total=total, completed=done)
        if done:
            self.console.print(f"resuming: {done} of {total} cells already in the results file", soft_wrap=True)

    def cell_started(self, key: CellKey) -> None:
        self.bar.update(self.task, description=f"{key[0]} {key[1]} {key[2]}")

    def cell_finished(self, row: dict[str, Any]) -> None:
        self.console.print(cell_line(row), markup=False, highlight=False, soft_wrap=True)
        self.bar.advance(self.task)

    def close(self) -> None:
        self.bar.stop()
