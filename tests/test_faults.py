"""Faults and bad input: nothing wrong is ever served, every bad request is one line, killed runs clean up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from deploy.bench import ResultRow
from deploy.bench import run as run_module
from deploy.cli import main
from deploy.errors import DeployError
from deploy.export import ExportRequest, artifacts, export, load_artifact
from deploy.export import stage as stage_module
from deploy.timing import LatencyStats

ROOT = Path(__file__).resolve().parents[1]
ON_MAC = sys.platform == "darwin"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("note: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


# ---------------------------------------------------------------- integrity


@pytest.fixture(scope="module")
def artifacts_by_target(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults")
    built = {"onnxruntime": export(ExportRequest("hvt_digits", "onnxruntime", out=out, batch=(1,))),
             "torch": export(ExportRequest("hvt_digits", "torch", out=out, batch=(1,)))}
    with contextlib.suppress(ImportError):
        import openvino  # noqa: F401

        built["openvino"] = export(ExportRequest("hvt_digits", "openvino", out=out, batch=(1,)))
    return built


def _flip(path: Path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset_fraction)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("target", "file"), [("onnxruntime", "model.onnx"), ("torch", "model.pt2"),
                                              ("openvino", "model.bin"), ("openvino", "model.xml")])
def test_a_flipped_byte_in_any_engine_file_is_refused_on_load(artifacts_by_target, tmp_path, target, file):
    if target not in artifacts_by_target:
        pytest.skip("openvino is not installed (pip install -e .[openvino])")
    copy = tmp_path / "copy"
    shutil.copytree(artifacts_by_target[target].artifact_dir, copy)
    load_artifact(copy)  # intact: loads
    _flip(copy / file)
    with pytest.raises(DeployError, match=rf"{file} does not match its manifest \(sha256 .* recorded, .* now\)"):
        load_artifact(copy)


def test_a_manifest_of_the_wrong_shape_is_one_clear_error(artifacts_by_target, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(artifacts_by_target["onnxruntime"].artifact_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["engine"]["files"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match=r"not a valid manifest \(engine.files: missing\)"):
        load_artifact(copy)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DeployError, match="not an artifact manifest"):
        load_artifact(copy)


# ---------------------------------------------------------------- an honest gate


def _results(*cells: tuple[str, str]) -> dict:
    rows = [{"model": m, "target": t, "precision": "fp32", "batch": 1, "status": "ok",
             "latency_ms": {k: 1.0 for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")}}
            for m, t in cells]
    return {"schema": 2, "results": rows}


def test_compare_with_no_shared_cell_exits_2_and_counts_each_side(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results(("deit_s", "onnxruntime"), ("hvt_s_1", "onnxruntime"))))
    new.write_text(json.dumps(_results(("deit_s", "openvino"))))
    assert main(["compare", str(old), str(new)]) == 2
    line = _one_error_line(capsys)
    assert "(2 cell(s))" in line and "(1 cell(s))" in line and "share no cell" in line


def test_compare_fails_when_a_cell_went_missing_unless_allowed(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results(("deit_s", "onnxruntime"), ("hvt_s_1", "onnxruntime"))))
    new.write_text(json.dumps(_results(("deit_s", "onnxruntime"))))
    assert main(["compare", str(old), str(new)]) == 1
    assert "only in OLD: MISSING" in capsys.readouterr().out
    assert main(["compare", str(old), str(new), "--allow-missing"]) == 0


# ---------------------------------------------------------------- weights sanity


def test_nan_weights_are_refused_naming_the_tensor(tmp_path, capsys):
    state = models.create_model("hvt_digits").state_dict()
    state["blocks.1.attn.qkv.weight"] = torch.full_like(state["blocks.1.attn.qkv.weight"], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save({"model": state}, path)
    assert main(["export", "hvt_digits", "--weights", str(path), "--out", str(tmp_path / "a")]) == 2
    line = _one_error_line(capsys)
    assert "non-finite values" in line and "blocks.1.attn.qkv.weight" in line
    assert not (tmp_path / "a" / "hvt_digits").exists()


def test_a_non_finite_output_blames_pytorch_or_the_engine():
    from deploy.export.parity import TOLERANCES, compare

    finite = np.ones((1, 10))
    assert "PyTorch's own outputs are non-finite" in compare(finite * np.nan, finite, TOLERANCES["fp32"]).reason
    assert "where PyTorch's are finite" in compare(finite, finite * np.inf, TOLERANCES["fp16"]).reason


# ---------------------------------------------------------------- honest status


@pytest.mark.skipif(ON_MAC, reason="on macOS Core ML runs, so its engines are verified, not unverified")
def test_coreml_on_linux_is_published_as_unverified(tmp_path, capsys):
    pytest.importorskip("coremltools", reason="the coreml extra is not installed: pip install -e .[coreml]")
    result = export(ExportRequest("hvt_digits", "coreml", out=tmp_path, batch=(1,)))
    assert result.manifest.status == "unverified" and "only on macOS" in result.manifest.parity.skipped
    runner, manifest = load_artifact(result.artifact_dir)  # not refused: it may be run on a Mac
    assert manifest.status == "unverified"
    code = main(["bench", "hvt_digits", "--target", "coreml", "--runs", "1", "--warmup", "0", "--no-progress",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert code == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["status"] == "unverified" and "only on macOS" in row["error"]
    assert "unverified" in capsys.readouterr().out


# ---------------------------------------------------------------- validation before work


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as building a model."""
    monkeypatch.setattr(stage_module, "load_model", lambda *a: pytest.fail("work started before validation"))
    monkeypatch.setattr(run_module, "run_group", lambda *a: pytest.fail("a cell ran"))


@pytest.mark.parametrize(("batch", "message"), [
    ("0", "batch sizes are positive integers"), ("-1", "batch sizes are positive integers"),
    ("3000", "over 1024"), ("100000", "over 1024"),
])
@pytest.mark.parametrize("command", ["export", "bench"])
def test_bad_batch_sizes_are_one_line_before_any_work(tmp_path, capsys, no_work, command, batch, message):
    assert main([command, "hvt_s_1", "--batch", batch, "--out", str(tmp_path)]) == 2
    assert message in _one_error_line(capsys)


def test_a_batch_over_the_memory_limit_names_the_limit(monkeypatch, tmp_path, capsys, no_work):
    from deploy.export import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 6 * 2**30)
    assert main(["export", "cvt_13", "--batch", "1000", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert "more than this machine can hold for cvt_13" in line and "6.0 GiB available" in line


# ---------------------------------------------------------------- crash safety


def test_a_killed_exports_leftovers_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "deploy", "export", "hvt_s_1", "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".work-") for p in out.glob(".*")):
        time.sleep(0.05)
    time.sleep(1.0)  # let it write into its work folder
    process.send_signal(signal.SIGKILL)
    process.wait()
    leftovers = [p for p in out.rglob(".*") if p.is_dir()]
    assert leftovers, "the killed export left its hidden folders behind"
    assert main(["export", "hvt_digits", "--out", str(out), "--batch", "1"]) == 0
    assert not [p for p in leftovers if p.exists()], "the next run removed them"
    assert "folder(s) left by killed runs" in capsys.readouterr().err


def test_a_live_runs_folders_are_left_alone(tmp_path):
    mine = tmp_path / f"{artifacts.owned_prefix('work')}abc"
    mine.mkdir()
    stranger = tmp_path / f".work-{os.getpid()}-1-abc"  # this pid is alive, but it started later than recorded
    stranger.mkdir()
    unknown = tmp_path / ".cache"
    unknown.mkdir()
    assert artifacts.sweep(tmp_path).folders == 1
    assert mine.exists() and unknown.exists() and not stranger.exists()


_PROMOTE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from deploy.export import artifacts
    final = Path(sys.argv[1])
    for i in range(200):
        with artifacts.staging(final) as stage:
            (stage / "who").write_text(f"{sys.argv[2]} {i}")
            artifacts.promote(stage, final)
""")


def test_concurrent_promotions_never_fail(tmp_path):
    final = tmp_path / "model" / "onnxruntime-fp32"
    processes = [subprocess.Popen([sys.executable, "-c", _PROMOTE, str(final), name], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    assert all(code == 0 for code, _ in results), results
    assert (final / "who").read_text().split()[1] == "199"
    assert sorted(p.name for p in final.parent.iterdir()) == ["onnxruntime-fp32"], "no staging or old folder left"


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, *flags: str):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *flags]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill: {mounted.stderr.strip() or 'mount failed'}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


FULL_DISK_TARGETS = ["onnxruntime", "torch", "openvino", "coreml"]


@pytest.mark.parametrize("target", FULL_DISK_TARGETS)
def test_a_full_disk_is_one_line_on_every_target(tmp_path, capsys, monkeypatch, target):
    if target in ("openvino", "coreml"):
        pytest.importorskip(target if target == "openvino" else "coremltools",
                            reason=f"the {target} extra is not installed")
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        # Refused up front: the free-space check sees 2 MB where the export needs more.
        assert main(["export", "hvt_digits", "--target", target, "--batch", "1", "--out", str(disk)]) == 2
        assert "not enough disk space" in _one_error_line(capsys)
        # Past the check (as if the estimate were wrong): the write itself fills the disk.
        monkeypatch.setattr(stage_module.limits, "check_free_space", lambda *a: None)
        (disk / "ballast").write_bytes(b"\0" * (2 * 2**20 - 300 * 2**10))
        assert main(["export", "hvt_digits", "--target", target, "--batch", "1", "--out", str(disk)]) == 2
        assert "no space left" in _one_error_line(capsys).lower()
        assert not (disk / "hvt_digits" / f"{target}-fp32").exists()


# ---------------------------------------------------------------- resume from the file alone


def _fake_group(interrupt_at: int | None, calls: list):
    def run(group, context):
        calls.append(group)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return [ResultRow(model=group.model, target=group.target, precision=group.precision, batch=b, status="ok",
                          latency_ms=LatencyStats.of([1.0]), runs=1) for b in group.batches]

    return run


def test_resume_with_only_the_file_finishes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    path, calls = tmp_path / "r.json", []
    monkeypatch.setattr(run_module, "run_group", _fake_group(2, calls))
    argv = ["bench", "hvt_ti_1", "deit_ti", "--target", "torch", "--target", "onnxruntime", "--batch", "1",
            "--batch", "2", "--runs", "3", "--warmup", "0", "--no-progress", "--out", str(tmp_path)]
    assert main([*argv, "--json", str(path)]) == 130
    hint = capsys.readouterr().err
    assert f"continue with --resume --json {path}" in hint
    calls.clear()
    monkeypatch.setattr(run_module, "run_group", _fake_group(None, calls))
    assert main(["bench", "--resume", "--json", str(path), "--no-progress"]) == 0
    document = json.loads(path.read_text())
    cells = [(r["model"], r["target"], r["batch"]) for r in document["results"]]
    assert len(cells) == len(set(cells)) == 8 and document["complete"] is True
    assert len(calls) == 3, "the interrupted group and the two not started"
    assert document["settings"]["runs"] == 3


def test_resume_refuses_flags_that_disagree_with_the_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r.json"
    monkeypatch.setattr(run_module, "run_group", _fake_group(None, []))
    assert main(["bench", "hvt_ti_1", "--target", "torch", "--runs", "3", "--warmup", "0", "--no-progress",
                 "--out", str(tmp_path), "--json", str(path)]) == 0
    capsys.readouterr()
    assert main(["bench", "--resume", "--json", str(path), "--runs", "5", "--target", "torch"]) == 2
    line = _one_error_line(capsys)
    assert "--runs 5 here, 3 in the file" in line and "--target" not in line


# ---------------------------------------------------------------- every command's bad input


def _write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


BAD_INPUTS = [
    (["list", "--family", "vgg"], "no family 'vgg'"),
    (["export", "hvt_s9"], "unknown model 'hvt_s9'"),
    (["export", "hvt_digits", "--target", "tflite"], "unknown target 'tflite'"),
    (["export", "hvt_digits", "--target", "torch", "--int8"], "cannot build int8"),
    (["export", "hvt_digits", "--opset", "5"], "--opset 5 is outside what the exporter writes"),
    (["export", "hvt_digits", "--target", "torch", "--opset", "20"], "converts from PyTorch, not ONNX"),
    (["export", "hvt_digits", "--target", "openvino", "--option", "streams=2"], "unknown option(s) streams"),
    (["export", "hvt_digits", "--option", "nothing"], "write KEY=VALUE"),
    (["export", "hvt_digits", "--threads", "0"], "--threads must be at least 1"),
    (["bench", "hvt_digits", "--runs", "0"], "--runs must be at least 1"),
    (["bench", "hvt_digits", "--warmup", "-1"], "--warmup must be at least 0"),
    (["bench"], "bench needs MODEL names"),
    (["bench", "hvt_digits", "--retry", "x/y/z"], "--retry goes with --resume"),
    (["bench", "--resume", "--json", "{tmp}/missing.json"], "does not exist"),
    (["bench", "hvt_digits", "--device", "cpu", "--profiles", "{tmp}/nowhere"], "is not a folder"),
    (["bench", "hvt_digits", "--device", "{tmp}/latin1.toml"], "is not UTF-8 text"),
    (["report", "{tmp}/missing.json", "--out", "{tmp}/r"], "cannot read results"),
    (["report", "{tmp}/row-missing-batch.json", "--out", "{tmp}/r"], "field batch: missing"),
    (["compare", "{tmp}/row-missing-batch.json", "{tmp}/row-missing-batch.json"], "field batch: missing"),
    (["inspect", "{tmp}/empty.onnx"], "is not an ONNX model (empty"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_every_command_refuses_bad_input_in_one_line(tmp_path, capsys, no_work, argv, message):
    _write(tmp_path, "latin1.toml", 'name = "caf\xe9"\n'.encode("latin-1"))
    _write(tmp_path, "empty.onnx", b"")
    _write(tmp_path, "row-missing-batch.json", json.dumps(
        {"schema": 2, "results": [{"model": "deit_s", "target": "torch", "precision": "fp32", "status": "ok"}]}))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] in ("export", "bench") else [])]) == 2
    assert message in _one_error_line(capsys)


def test_a_read_only_json_path_is_named_as_such(tmp_path, capsys, no_work):
    with _tmpfs(tmp_path / "ro", "1m", "ro") as folder:  # read-only even for root
        assert main(["bench", "hvt_digits", "--json", str(folder / "r.json"), "--out", str(tmp_path)]) == 2
        line = _one_error_line(capsys)
    assert "pass a writable --json" in line and "--out" not in line


# ---------------------------------------------------------------- the parser, at random

FLAGS = st.sampled_from(["--target", "--batch", "--precision", "--int8", "--fp16", "--passes", "--runs", "--warmup",
                         "--threads", "--seed", "--dataset", "--limit", "--resume", "--retry", "--retry-failed",
                         "--json", "--device", "--opset", "--option", "--metric", "--max-slowdown", "--family",
                         "--allow-missing", "--no-progress", "--debug-nope", "--help"])
VALUES = st.sampled_from(["0", "-1", "3", "1e9", "fp32", "int4", "onnxruntime", "nope", "digits", "auto", "x=1",
                          "a/b/c", "", "hvt_digits", "deit_s", "%", "{tmp}/r.json", "{tmp}/none"])
COMMANDS = st.sampled_from(["list", "export", "bench", "report", "compare", "doctor", "passes", "inspect", "fly"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=COMMANDS, words=st.lists(st.one_of(FLAGS, VALUES), max_size=6))
def test_random_command_lines_never_trace_back(tmp_path, capsys, monkeypatch, command, words):
    monkeypatch.setattr(stage_module, "load_model", lambda *a: (_ for _ in ()).throw(DeployError("stopped")))
    monkeypatch.setattr(run_module, "run_group", lambda *a: [])
    argv = [command, *(w.replace("{tmp}", str(tmp_path)) for w in words)]
    if command in ("export", "bench"):
        argv += ["--out", str(tmp_path / "o")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        code = exc.code
    captured = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in captured.err and "internal error" not in captured.err, (argv, captured.err)
