"""Target profiles and `--passes auto`: candidates, the choice rule, and a measured selection end to end.

Timing budgets here are tiny (one round of two runs): these tests check the mechanism and the record,
not which candidate is fastest.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from helpers import small_hvt

from deploy.errors import DeployError
from deploy.export import autotune
from deploy.export.autotune import AutotuneSettings, candidate_sets, select_passes
from deploy.export.onnx_export import clean_up, export_onnx
from deploy.export.request import EngineJob
from deploy.export.targets import TARGETS, get_target, resolve_passes
from deploy.passes import GraphPass, available_passes, register_pass
from deploy.passes import base as passes_base
from runtimes import BuildOptions, ModelSource, TensorSpec, get_backend

TINY = AutotuneSettings(rounds=1, runs=2, warmup_s=0.0)


def test_every_profile_pass_exists_and_onnx_targets_share_the_normalisation_passes():
    names = set(available_passes())
    for profile in TARGETS.values():
        assert set(profile.default_passes) <= names, profile.name
        for spec in profile.auto_candidates:
            assert set(resolve_passes(profile, spec)) <= names, (profile.name, spec)
        for appended in profile.precision_passes.values():
            assert set(appended) <= names
            assert set(profile.precision_passes) <= set(profile.precisions)
        if profile.opset is not None:
            assert {"layernorm-fuse", "gelu-fuse", "attention-canonical", "pool1d-to-2d"} <= set(
                profile.default_passes)


def test_candidate_sets_are_simplest_first_and_distinct():
    profile = get_target("onnxruntime")
    sets = candidate_sets(profile)
    assert [label for label, _ in sets[:2]] == ["none", "default"]
    assert sets[0][1] == [] and sets[1][1] == list(profile.default_passes)
    assert len({tuple(names) for _, names in sets}) == len(sets)
    assert len(sets) == 2 + len(profile.auto_candidates)


def _measured(label, score, passes=()):
    from deploy.export.manifest import CandidateLatency, CandidateRecord

    timing = dict.fromkeys(("p50", "p90", "p95", "p99", "mean", "std", "min", "max"), score)
    latency = CandidateLatency(**timing, score=score, round_medians=[score])
    return CandidateRecord(label, list(passes), latency_ms=latency)


def test_choice_prefers_the_simpler_candidate_within_the_margin():
    records = [_measured("none", 10.0), _measured("default", 9.9), _measured("+x", 9.0)]
    winner, reason = autotune._choose(records, tie_margin=0.02)
    assert winner.label == "+x" and "fastest" in reason and "0.900x the plain export" in reason
    winner, reason = autotune._choose(records[:2], tie_margin=0.02)
    assert winner.label == "none" and "within 2%" in reason  # 1% faster is noise: keep the plain graph
    winner, _ = autotune._choose([_measured("none", 10.0), _measured("default", 12.0)], tie_margin=0.02)
    assert winner.label == "none"  # never slower than the plain export


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("DEPLOY_AUTO_ROUNDS", "5")
    monkeypatch.setenv("DEPLOY_AUTO_TIE_MARGIN", "0.05")
    settings = AutotuneSettings.from_env()
    assert settings.rounds == 5 and settings.tie_margin == 0.05 and settings.runs == AutotuneSettings().runs
    monkeypatch.setenv("DEPLOY_AUTO_RUNS", "many")
    with pytest.raises(DeployError, match="DEPLOY_AUTO_RUNS"):
        AutotuneSettings.from_env()


@pytest.fixture(scope="module")
def tiny_hvt_onnx():
    model = small_hvt()
    return model, clean_up(export_onnx(model, (3, 32, 32), opset=20))


@pytest.fixture
def broken_pass():
    """A pass that doubles the output: a candidate that builds but fails parity."""

    def run(model):
        output = model.graph.outputs[0]
        producer = output.producer()
        producer.attributes["alpha"] = ir.AttrFloat32("alpha", 2.0)
        return 1

    graph_pass = register_pass(GraphPass("test-broken", "doubles the logits (test only)", run))
    yield graph_pass
    del passes_base._PASSES["test-broken"]


def _select(model, proto, profile, tmp_path, precision="fp32"):
    def reference(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    source = ModelSource([TensorSpec("input", ("batch", 3, 32, 32))], ["logits"])
    job = EngineJob(profile, precision, get_backend(profile.name), BuildOptions(precision=precision), source, reference)
    return select_passes(proto, job, tmp_path, TINY)


@pytest.mark.slow
def test_select_passes_measures_every_candidate_and_records_why(tiny_hvt_onnx, tmp_path, broken_pass):
    model, proto = tiny_hvt_onnx
    assert proto.graph.node[-1].op_type == "Gemm"  # the broken pass doubles Gemm's alpha
    base = get_target("onnxruntime")
    profile = dataclasses.replace(base, auto_candidates=(*base.auto_candidates, "+test-broken"))
    record = _select(model, proto, profile, tmp_path)
    by_label = {c.label: c for c in record.candidates}
    assert list(by_label)[:2] == ["none", "default"]
    assert by_label["+test-broken"].status == "failed-parity"
    assert record.winner != "+test-broken"
    for label, candidate in by_label.items():
        if label != "+test-broken":
            assert candidate.status in ("ok", "same-graph"), candidate
        if candidate.status == "ok":
            assert candidate.parity.passed and candidate.latency_ms.score > 0
            assert len(candidate.latency_ms.round_medians) == TINY.rounds
    assert record.passes == by_label[record.winner].passes
    assert record.reason and record.settings["runs"] == TINY.runs


@pytest.mark.slow
def test_select_passes_for_fp16_appends_the_conversion(tiny_hvt_onnx, tmp_path):
    model, proto = tiny_hvt_onnx
    profile = dataclasses.replace(get_target("onnxruntime"), auto_candidates=())
    record = _select(model, proto, profile, tmp_path, precision="fp16")
    assert record.appended == ["fp16-convert"]
    for candidate in record.candidates:
        assert candidate.changes["fp16-convert"] > 0 and candidate.parity.passed


@pytest.mark.slow
def test_export_with_passes_auto_records_the_candidates(tmp_path):
    from deploy.export import ExportRequest, export

    result = export(ExportRequest("hvt_digits", "onnxruntime", out=tmp_path, batch=(1,), passes="auto",
                                  autotune=TINY))
    onnx_record = result.manifest.onnx
    auto = onnx_record.auto
    assert auto.winner in {c.label for c in auto.candidates}
    assert [p.name for p in onnx_record.passes] == auto.passes
    assert result.manifest.parity.passed
    assert onnx.load(str(result.artifact_dir / "model.onnx"))
    assert np.isfinite(auto.seconds)


def test_passes_command_lists_every_pass_with_its_targets(capsys):
    from deploy.cli import main

    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in available_passes():
        assert f"  {name}\n" in out
    assert "default for: onnxruntime, openvino, tensorrt" in out
    assert "tried by --passes auto on: onnxruntime" in out and "appended for: onnxruntime fp16" in out


@pytest.mark.slow
def test_inspect_shows_weight_types(tiny_hvt_onnx, tmp_path, capsys):
    from deploy.cli import main
    from deploy.passes import run_passes

    path = tmp_path / "fp16.onnx"
    onnx.save(run_passes(tiny_hvt_onnx[1], ["fp16-convert"])[0], str(path))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "input  input (batch, 3, 32, 32) float32" in out and "M float16" in out and "Cast" in out
