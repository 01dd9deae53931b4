"""The CLI: one clear line and a non-zero exit for bad input, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import error_line

from deploy.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_list_shows_the_zoo():
    result = run_cli("list")
    assert result.returncode == 0
    assert "hvt_s_1" in result.stdout and "deit_s" in result.stdout and "78.00" in result.stdout


def test_main_in_process_puts_the_deploy_logger_back(capsys, caplog):
    """`main` prints notes as `note:` lines while it runs, and leaves the `deploy` logger as it found it: CI failed
    when an earlier in-process command had left `propagate` off and a later test's caplog saw no note."""
    import logging

    logger = logging.getLogger("deploy")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert main(["passes"]) == 0
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    with caplog.at_level(logging.WARNING, logger="deploy"):
        logging.getLogger("deploy.data").warning("after main")
    assert "after main" in caplog.text


@pytest.mark.slow
@pytest.mark.subprocess
def test_closed_pipe_is_not_an_error():
    """`python -m deploy passes | head -0`: the reader leaves first; no traceback, no 'internal error'."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "passes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child writes, so its first write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "error" not in stderr.lower() and "Traceback" not in stderr


@pytest.mark.subprocess
def test_list_json():
    rows = json.loads(run_cli("list", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["hvt_s_4"]["aliases"] == ["scale_hvt_ti_4"]
    assert by_name["hvt_s_1"]["published_top1"] == 78.0


def run_in_process(capsys, *args: str) -> tuple[int, str]:
    """`main` in this process (a subprocess costs 3-5 s of imports per case): exit status and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["export", "hvt_s", "--target", "tensorrtt"], "unknown target 'tensorrtt'; did you mean tensorrt"),
    (["export", "hvt_s", "--weights", "/no/such.pth"], "weights file /no/such.pth does not exist"),
    (["export", "hvt_s", "--target", "torch", "--int8"], "torch cannot build int8"),
    (["bench", "hvt_s", "hvt_zz"], "unknown model 'hvt_zz'"),
    (["inspect", "/no/such.onnx"], "not a readable ONNX model"),
    (["export", "hvt_s", "--passes", "nope"], "unknown pass 'nope'"),
])
def test_bad_input_is_one_line(capsys, args, message):
    code, stderr = run_in_process(capsys, *args)
    assert code == 2
    assert message in error_line(stderr, notes_allowed=False)


@pytest.mark.slow
@pytest.mark.subprocess
def test_bad_input_is_one_line_and_status_2_from_the_shell():
    """The same refusal through `python -m deploy`: the process's status and stderr, nothing else."""
    result = run_cli("export", "hvt_q")
    assert result.returncode == 2
    assert "unknown model 'hvt_q'; did you mean" in error_line(result.stderr, notes_allowed=False)


def test_mismatched_checkpoint_names_the_keys(tmp_path, capsys):
    path = tmp_path / "deit.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 384)}}, path)
    code, stderr = run_in_process(capsys, "export", "hvt_s_1", "--weights", str(path), "--out", str(tmp_path))
    assert code == 2
    assert "unexpected keys: cls_token" in stderr
    assert "missing keys: pos_embed, patch_embed.proj.weight" in stderr
    assert not (tmp_path / "hvt_s_1").exists()


def test_unwritable_out(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, stderr = run_in_process(capsys, "export", "hvt_ti", "--out", str(tmp_path / "f" / "g"))
    assert code == 2 and "cannot write to output folder" in stderr


@pytest.fixture(scope="module")
def doctor_json() -> subprocess.CompletedProcess:
    """`doctor --json`, run once: it imports every runtime (about 11 s here), and two tests read it."""
    return run_cli("doctor", "--json")


@pytest.mark.slow
@pytest.mark.subprocess
def test_doctor_reports_each_runtime(doctor_json):
    rows = json.loads(doctor_json.stdout)
    by_name = {r["runtime"]: r for r in rows}
    assert by_name["onnxruntime"]["can_run"] is True
    assert {"torch", "onnxruntime", "openvino", "tensorrt", "coreml"} <= set(by_name)
    for row in rows:
        assert row["installed"] or row["reason"]  # a missing runtime says why


@pytest.mark.slow
def test_export_command(tmp_path, capsys):
    assert main(["export", "hvt_ti", "--out", str(tmp_path), "--batch", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "pool1d-to-2d: 1 change(s)" in out and "PASS  max|err|" in out, "fp32 is judged on the seeded figures"
    assert (tmp_path / "hvt_ti_1" / "onnxruntime-fp32" / "manifest.json").is_file()


@pytest.mark.slow
def test_an_int8_export_says_its_gate_is_the_labelled_images(tmp_path, capsys):
    """The seeded figures of int8 are recorded, not the gate: the PASS on their line says what it was judged on."""
    assert main(["export", "hvt_digits", "--int8", "--batch", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(int8, batches 1): PASS (gate: 450 digits images)  max|err|" in out, out


@pytest.mark.slow
def test_bench_writes_results_json(tmp_path, capsys):
    results = tmp_path / "results.json"
    code = main(["bench", "hvt_ti_1", "--target", "onnxruntime", "--target", "torch", "--runs", "3",
                 "--warmup", "0", "--out", str(tmp_path / "art"), "--json", str(results)])
    assert code == 0
    report = json.loads(results.read_text())
    assert report["environment"]["cpu_count"] >= 1
    assert [(r["target"], r["status"]) for r in report["results"]] == [("onnxruntime", "ok"), ("torch", "ok")]
    for row in report["results"]:
        assert set(row["latency_ms"]) >= {"p50", "p90", "p99", "mean", "min"}
        assert row["latency_ms"]["min"] <= row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["throughput_ips"] > 0 and row["runs"] == 3
        assert row["parity"]["passed"] is True and row["parity"]["top1_agreement"] == 1.0
        assert row["params"] == 5_735_656 and row["macs"] == 642_000_000
    assert "hvt_ti_1" in capsys.readouterr().out


def test_bench_marks_missing_runtime_unavailable(tmp_path, monkeypatch):
    from runtimes.base import Availability
    from runtimes.ort_backend import OrtBackend

    monkeypatch.setattr(OrtBackend, "availability",
                        lambda self: Availability(False, None, "onnxruntime is not installed (test double)"))
    results = tmp_path / "r.json"
    assert main(["bench", "hvt_ti_1", "--target", "onnxruntime", "--runs", "2", "--warmup", "0",
                 "--out", str(tmp_path), "--json", str(results)]) == 0
    row = json.loads(results.read_text())["results"][0]
    assert row["status"] == "unavailable" and "not installed" in row["error"]
    assert row["latency_ms"] is None


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_command_that_imports_the_runtimes_prints_no_third_party_import_warnings(doctor_json):
    """`doctor` imports every runtime: torchao's CUDA-kernel and pytree lines and coremltools' version lines stay out
    of a normal run (filtered by logger and message); --debug shows them, which proves the filter hides them."""
    from runtimes.import_noise import NOISE

    normal, debug = doctor_json, run_cli("--debug", "doctor", "--json")
    assert normal.returncode == debug.returncode == 0, normal.stderr + debug.stderr
    assert normal.stderr.strip() == "", normal.stderr
    if not any(n.fragment in debug.stderr for n in NOISE):
        pytest.skip("this install's libraries print none of the known import warnings")


def test_export_target_help_names_every_target():
    from deploy.cli.parser import build_parser
    from runtimes import target_names

    export = build_parser()._subparsers._group_actions[0].choices["export"]  # type: ignore[union-attr]
    target = next(a for a in export._actions if "--target" in a.option_strings)
    assert [name for name in target_names() if name not in target.help] == []
