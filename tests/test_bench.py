"""The harness: percentile maths, timing loop, incremental results, resume, failed cells, outputs."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import time

import numpy as np
import pytest

from deploy import timing
from deploy.bench import BenchRequest, BenchSettings, LocalExecutor, ResultRow, ResultsFile, Resume, run_bench
from deploy.bench import group as group_module
from deploy.bench import run as run_module
from deploy.bench.plan import plan_matrix
from deploy.bench.results import CellKey
from deploy.cli import main
from deploy.errors import DeployError
from deploy.timing import LatencyStats, TimingSettings

# ---------------------------------------------------------------- percentile maths


def test_latency_stats_on_a_known_sample():
    stats = LatencyStats.of(list(range(1, 101)))  # 1..100 ms
    # numpy's default (linear) interpolation: p = 1 + (n - 1) * q
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p95 == pytest.approx(95.05)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    assert stats.std == pytest.approx(28.866070047722118)  # population std, as np.std
    assert (stats.min, stats.max) == (1.0, 100.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latency_stats_match_numpy_on_skewed_samples(seed):
    samples = np.random.default_rng(seed).lognormal(mean=1.0, sigma=0.6, size=257)
    stats = LatencyStats.of(samples)
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert stats.get(key) == pytest.approx(np.percentile(samples, q), rel=1e-12)
    assert stats.std == pytest.approx(np.std(samples), rel=1e-12)
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max


def test_latency_stats_of_one_sample_and_of_none():
    assert LatencyStats.of([3.0]).p99 == 3.0 and LatencyStats.of([3.0]).std == 0.0
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats.of([])


# ---------------------------------------------------------------- the timing loop


class FakeRunner:
    def __init__(self, sleep_s: float = 0.0):
        self.sleep_s = sleep_s
        self.seen: list[int] = []

    def infer(self, feed):
        self.seen.append(id(feed["input"]))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return {"logits": np.zeros((1, 10), np.float32)}


def test_timed_runs_by_count_rotate_the_input_buffers():
    runner = FakeRunner()
    settings = TimingSettings(warmup_s=0.0, min_warmup_runs=2, runs=12, buffers=4)
    samples = timing.time_runner(runner, "input", (3, 8, 8), 1, settings)
    assert len(samples) == 12 and all(s >= 0 for s in samples)
    timed = runner.seen[2:]  # after the 2 warm-up runs
    assert len(set(timed)) == 4, "inputs rotate among 4 distinct buffers"
    assert timed[:4] == timed[4:8] == timed[8:12]


def test_timed_runs_by_duration_respect_the_floor_and_the_clock():
    settings = TimingSettings(duration_s=0.05, min_runs=3, runs=1_000_000)
    feeds = timing.input_feeds("input", (3, 8, 8), 1, settings)
    start = time.perf_counter()
    samples = timing.timed_runs(FakeRunner(sleep_s=0.005), feeds, settings)
    assert time.perf_counter() - start >= 0.05
    assert 3 <= len(samples) < 100, "stops at the duration, not at `runs`"
    slow = timing.timed_runs(FakeRunner(sleep_s=0.03), feeds, TimingSettings(duration_s=0.001, min_runs=3))
    assert len(slow) == 3, "at least min_runs even when one run outlasts the duration"


def test_warm_up_is_by_time_with_a_minimum_count():
    feeds = timing.input_feeds("input", (3, 4, 4), 1, TimingSettings())
    assert timing.warm_up(FakeRunner(), feeds, TimingSettings(warmup_s=0.0, min_warmup_runs=3)) == 3
    start = time.perf_counter()
    done = timing.warm_up(FakeRunner(sleep_s=0.002), feeds, TimingSettings(warmup_s=0.03, min_warmup_runs=1))
    assert time.perf_counter() - start >= 0.03 and done > 1


# ---------------------------------------------------------------- incremental writes and resume


def _fake_group(calls: list, interrupt_at: int | None = None):
    """A stand-in for run_group: synthetic rows, a fresh nonce per call (in `runs`), optional Ctrl-C."""

    def fake(group, context):
        calls.append((group.model, group.target, group.precision, group.batches))
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return [ResultRow(model=group.model, target=group.target, precision=group.precision, batch=b, status="ok",
                          latency_ms=LatencyStats.of([float(len(calls))]), runs=len(calls), macs=1)
                for b in group.batches]

    return fake


def _request(names, targets, batches, settings, out, precision=None):
    return BenchRequest(names, targets, batches, settings, out, precision=precision)


def test_results_are_written_after_each_cell_and_resume_keeps_each_cell_once(tmp_path):
    path = tmp_path / "results.json"
    calls: list = []
    settings = BenchSettings(runs=3, warmup_s=0)
    request = _request(["hvt_ti_1", "hvt_s_1", "deit_s"], ["torch", "onnxruntime"], [1, 4], settings, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_bench(request, ResultsFile(path), executor=LocalExecutor(_fake_group(calls, interrupt_at=3)))
    partial = json.loads(path.read_text())
    assert partial["complete"] is False
    assert len(partial["results"]) == 4, "two finished groups x two batches were saved before Ctrl-C"
    saved = {_key(r): r["runs"] for r in partial["results"]}

    calls.clear()
    report = run_bench(request, ResultsFile(path), resume=Resume(), executor=LocalExecutor(_fake_group(calls)))
    assert len(calls) == 4, "only the 4 groups the file lacked ran"
    final = json.loads(path.read_text())
    keys = [_key(r) for r in final["results"]]
    assert len(keys) == len(set(keys)) == 12, "every cell exactly once"
    assert keys == plan_matrix(["hvt_ti_1", "hvt_s_1", "deit_s"], ["torch", "onnxruntime"], [1, 4], None)
    for row in final["results"]:
        if _key(row) in saved:
            assert row["runs"] == saved[_key(row)], "finished cells are kept, not re-run"
    assert final["complete"] is True and len(final["resumed"]) == 1
    assert report.to_json()["results"] == final["results"]


def _key(row: dict) -> CellKey:
    return CellKey(row["model"], row["target"], row["precision"], row["batch"])


def test_resume_refuses_other_settings_and_can_retry_failed(tmp_path):
    path = tmp_path / "results.json"
    calls: list = []
    executor = LocalExecutor(_fake_group(calls))

    def request(settings):
        return _request(["hvt_ti_1"], ["torch", "onnxruntime"], [1], settings, tmp_path)

    run_bench(request(BenchSettings(runs=3)), ResultsFile(path), executor=executor)
    with pytest.raises(DeployError, match="runs=3 there, 5 now"):
        run_bench(request(BenchSettings(runs=5)), ResultsFile(path), resume=Resume(), executor=executor)

    report = json.loads(path.read_text())
    report["results"][1].update(status="failed", error="boom")
    path.write_text(json.dumps(report))
    calls.clear()
    run_bench(request(BenchSettings(runs=3)), ResultsFile(path), resume=Resume(), executor=executor)
    assert calls == [], "failed cells are finished cells unless retried"
    run_bench(request(BenchSettings(runs=3)), ResultsFile(path), resume=Resume(retry_failed=True), executor=executor)
    assert calls == [("hvt_ti_1", "onnxruntime", "fp32", (1,))]
    assert [r["status"] for r in json.loads(path.read_text())["results"]] == ["ok", "ok"]


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real_export = group_module.export

    def flaky_export(request, onnx_cache=None):
        if request.target == "onnxruntime":
            raise DeployError("simulated export failure")
        return real_export(request, onnx_cache=onnx_cache)

    monkeypatch.setattr(group_module, "export", flaky_export)
    path = tmp_path / "r.json"
    report = run_bench(_request(["hvt_digits"], ["onnxruntime", "torch"], [1], BenchSettings(runs=3, warmup_s=0),
                                tmp_path / "art"), ResultsFile(path))
    failed, ok = report.results
    assert (failed.status, failed.error) == ("failed", "simulated export failure")
    assert failed.latency_ms is None
    assert ok.status == "ok" and ok.runs == 3
    assert ok.memory.rss_peak_mb > 0 and ok.memory.rss_growth_mb >= 0
    assert json.loads(path.read_text())["results"] == report.to_json()["results"]


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_bench_digits_with_accuracy_writes_json_csv_and_markdown(tmp_path, capsys):
    paths = {ext: tmp_path / f"results.{ext}" for ext in ("json", "csv", "md")}
    code = main(["bench", "hvt_digits", "--dataset", "digits", "--limit", "60", "--target", "onnxruntime",
                 "--batch", "1", "--batch", "4", "--runs", "4", "--warmup", "0", "--no-progress",
                 "--out", str(tmp_path / "art"), "--json", str(paths["json"]), "--csv", str(paths["csv"]),
                 "--md", str(paths["md"])])
    assert code == 0
    report = json.loads(paths["json"].read_text())
    assert report["complete"] is True and report["settings"]["dataset"] == "digits"
    assert report["environment"]["device"]["cpu"]["cores"] >= 1
    assert [(r["batch"], r["runs"]) for r in report["results"]] == [(1, 4), (4, 4)]
    for row in report["results"]:
        acc = row["accuracy"]
        assert acc["images"] == 60 and acc["agreement"] >= 0.995
        assert acc["top1"] == pytest.approx(acc["reference_top1"], abs=0.02) and acc["top1"] > 0.9
        assert row["throughput_ips"] == pytest.approx(row["batch"] * 1e3 / row["latency_ms"]["mean"])
        assert row["weights"] == "shipped:weights/hvt_digits.pth"
    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["batch"] for r in table] == ["1", "4"] and float(table[0]["top1"]) > 0.9
    assert paths["md"].read_text().startswith("| model | target |")
    out = capsys.readouterr()
    assert "acc@1" in out.out and "hvt_digits onnxruntime fp32 b1: ok" in out.err


def test_bench_resume_with_nothing_left_to_do_runs_nothing(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    monkeypatch.setattr(run_module, "run_group", _fake_group([]))
    argv = ["bench", "hvt_ti_1", "--target", "torch", "--runs", "2", "--warmup", "0", "--no-progress",
            "--out", str(tmp_path), "--json", str(path)]
    assert main(argv) == 0
    first = json.loads(path.read_text())["results"]
    monkeypatch.setattr(run_module, "run_group", lambda *a: pytest.fail("a finished cell ran again"))
    assert main([*argv, "--resume"]) == 0
    assert json.loads(path.read_text())["results"] == first


@pytest.mark.parametrize(("argv", "message"), [
    (["bench"], "bench needs MODEL names"),
    (["bench", "hvt_ti_1", "--resume"], "--resume continues a results file"),
    (["bench", "deit_s", "--dataset", "digits"], "digit classes; deit_s predicts 1000"),
    (["bench", "hvt_digits", "--dataset", "/no/such/folder"], "dataset folder /no/such/folder does not exist"),
    (["bench", "hvt_digits", "--retry-failed"], "--retry-failed goes with --resume"),
])
def test_bench_refuses_bad_requests_in_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.slow
def test_random_init_models_pass_parity_on_two_onnx_runtimes_sharing_one_export(tmp_path):
    """ORT and OpenVINO share the cached ONNX file; both must be checked against the same weights."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install -e .[openvino])")
    report = run_bench(_request(["hvt_ti_1"], ["onnxruntime", "openvino"], [1], BenchSettings(runs=2, warmup_s=0),
                                tmp_path))
    assert [(r.target, r.status) for r in report.results] == [("onnxruntime", "ok"), ("openvino", "ok")]
    assert all(r.parity.cosine > 0.99999 and r.weights == "random-init" for r in report.results)


# ---------------------------------------------------------------- the results file's types


def test_the_shipped_json_schema_is_generated_from_the_types():
    from pathlib import Path

    from deploy.bench import results

    shipped = json.loads((Path(results.__file__).parent / "results.schema.json").read_text())
    assert shipped == results.results_json_schema(), "regenerate it: python scripts/results_schema.py"
    assert shipped["properties"]["schema"]["default"] == results.SCHEMA_VERSION
    row = shipped["$defs"]["ResultRow"]
    assert set(row["required"]) == {"model", "target", "precision", "batch", "status"}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(schema=1), "has results schema 1; this version of vit-deploy reads schema 2"),
    (lambda d: d["results"][0].pop("batch"), r"row 0 \(hvt_ti_1/torch/fp32/\?\), field batch: missing"),
    (lambda d: d["results"][0].update(status="great"), "row 0 .*, field status: input should be"),
])
def test_results_files_of_the_wrong_shape_are_one_clear_error(tmp_path, change, message):
    from deploy.bench.results import load_results

    document = {"schema": 2, "results": [{"model": "hvt_ti_1", "target": "torch", "precision": "fp32", "batch": 1,
                                          "status": "ok"}]}
    change(document)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DeployError, match=message):
        load_results(path)
