"""The export stage end to end: ONNX, passes, engine, parity gate, manifest, atomic folders."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

import runtimes
from deploy.errors import DeployError, OutputDirError, ParityError
from deploy.export import ExportRequest, artifacts, export, load_artifact
from deploy.export.targets import get_target
from runtimes.ort_backend import OrtBackend

# Every 224-input variant, with the number of token pools the rewrite must find and BatchNorms folded.
ZOO_224 = {
    "hvt_ti_1": (1, 0), "hvt_s_0": (0, 0), "hvt_s_1": (1, 0), "hvt_s_2": (2, 0), "hvt_s_3": (3, 0),
    "hvt_s_4": (4, 0), "deit_s": (0, 0), "deit_ti": (0, 0),
    "cvt_13": (0, 3 * 13), "cvt_21": (0, 3 * 21),
    "vit_resnas_tiny": (0, 3), "vit_resnas_small": (0, 3), "vit_resnas_medium": (0, 3),
}


# One variant per family runs by default (about 90 s here); the others differ in widths, depths and pooling
# schedule (tests/test_models.py checks those) and cost about 4 more minutes: VIT_DEPLOY_FULL_ZOO=1 runs them.
EVERY_RUN = ("hvt_s_1", "deit_ti", "cvt_13", "vit_resnas_tiny")
FULL_ZOO = os.environ.get("VIT_DEPLOY_FULL_ZOO") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    name if name in EVERY_RUN or FULL_ZOO else pytest.param(name, marks=pytest.mark.skip(
        reason="full-size parity of the other variants of a family costs minutes: set VIT_DEPLOY_FULL_ZOO=1"))
    for name in ZOO_224])
def test_zoo_model_passes_fp32_parity_on_onnxruntime(tmp_path, name):
    pools, folded = ZOO_224[name]
    result = export(ExportRequest(name, "onnxruntime", out=tmp_path, batch=(1, 4)))
    parity = result.manifest.parity
    assert parity.passed, parity.reason
    assert [b["batch"] for b in parity.batches] == [1, 4]
    assert parity.max_abs_rel <= 1e-4
    proto = onnx.load(str(result.artifact_dir / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    records = {r.name: r.changed for r in result.manifest.onnx.passes}
    assert list(records) == list(get_target("onnxruntime").default_passes)
    assert records["pool1d-to-2d"] == pools
    assert result.manifest.model.batchnorm_folded == folded
    histogram = result.manifest.onnx.op_histogram
    assert "BatchNormalization" not in histogram and "Einsum" not in histogram


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    return export(ExportRequest("hvt_ti_1", "onnxruntime", out=out, batch=(1, 2)))


@pytest.mark.slow
def test_manifest_records_how_the_engine_was_made(exported):
    manifest = json.loads((exported.artifact_dir / "manifest.json").read_text())
    assert exported.artifact_dir.name == "onnxruntime-fp32"
    assert exported.artifact_dir.parent.name == "hvt_ti_1"
    assert manifest["status"] == "ok"
    assert manifest["model"]["name"] == "hvt_ti_1" and manifest["model"]["config"]["num_heads"] == 3
    assert manifest["weights"]["source"] == "random-init"
    assert manifest["onnx"]["opset"] == 20 and len(manifest["onnx"]["sha256"]) == 64
    assert {"name": "pool1d-to-2d", "changed": 1} in manifest["onnx"]["passes"]
    assert manifest["inputs"] == [{"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]
    assert manifest["outputs"][0]["name"] == "logits"
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(manifest["versions"])
    assert manifest["engine"]["files"] == ["model.onnx"]
    assert manifest["created"].endswith("+00:00")
    assert not [p for p in exported.artifact_dir.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_artifact_loads_and_runs_dynamic_batch(exported):
    runner, manifest = load_artifact(exported.artifact_dir)
    with runner:
        out = runner.infer({"input": np.zeros((3, 3, 224, 224), np.float32)})
    assert out["logits"].shape == (3, 1000)


@pytest.mark.slow
def test_wrong_input_shape_is_refused_clearly(exported):
    runner, _ = load_artifact(exported.artifact_dir)
    message = r"has shape \(1, 3, 200, 200\), expected \(batch, 3, 224, 224\)"
    with runner, pytest.raises(runtimes.InputMismatchError, match=message):
        runner.infer({"input": np.zeros((1, 3, 200, 200), np.float32)})


def test_corrupt_engine_is_a_clear_error(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported.artifact_dir, copy)
    (copy / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(DeployError, match="does not match its manifest"):
        load_artifact(copy)  # the manifest's hash catches it first (tests/test_faults.py)
    runner = runtimes.get_backend("onnxruntime").load(copy, "model.onnx", runtimes.BuildOptions())
    with pytest.raises(runtimes.EngineLoadError, match="cannot load"):
        runner.activate()


@pytest.mark.slow
def test_failed_build_leaves_nothing_and_keeps_the_old_artifact(exported, monkeypatch):
    before = (exported.artifact_dir / "model.onnx").read_bytes()

    def broken_build(self, source, out_dir, options):
        (out_dir / "model.onnx").write_bytes(b"half-written")
        raise DeployError("disk full")

    monkeypatch.setattr(OrtBackend, "build", broken_build)
    with pytest.raises(DeployError, match="disk full"):
        export(ExportRequest("hvt_ti_1", "onnxruntime", out=exported.artifact_dir.parents[1], batch=(1,)))
    assert (exported.artifact_dir / "model.onnx").read_bytes() == before
    leftovers = [p.name for p in exported.artifact_dir.parents[1].rglob(".*")]
    assert leftovers == []


@pytest.mark.slow
def test_parity_failure_is_not_promoted(tmp_path, monkeypatch):
    from runtimes.ort_backend import OrtRunner

    real_infer = OrtRunner._infer

    def noisy(self, feed):
        return {k: v + 0.5 for k, v in real_infer(self, feed).items()}

    monkeypatch.setattr(OrtRunner, "_infer", noisy)
    with pytest.raises(ParityError, match="fails parity.*max abs error"):
        export(ExportRequest("hvt_ti_1", "onnxruntime", out=tmp_path, batch=(1,)))
    final = artifacts.artifact_dir(tmp_path, "hvt_ti_1", "onnxruntime", "fp32")
    assert not final.exists()
    rejected = final.with_name(final.name + ".failed")
    assert json.loads((rejected / "manifest.json").read_text())["status"] == "failed"
    with pytest.raises(DeployError, match="failed parity"):
        load_artifact(rejected)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputDirError, match="cannot write to output folder"):
        export(ExportRequest("hvt_ti_1", out=blocker / "sub"))


def test_precision_the_target_cannot_build():
    with pytest.raises(DeployError, match="onnxruntime cannot build bf16"):
        export(ExportRequest("hvt_ti_1", "onnxruntime", precision="bf16"))


@pytest.mark.slow
def test_torch_target_round_trips_through_torch_export(tmp_path):
    result = export(ExportRequest("hvt_ti_1", "torch", out=tmp_path, batch=(1, 2)))
    assert result.manifest.engine.files == ["model.pt2"]
    assert result.manifest.parity.max_abs < 1e-5
    runner, _ = load_artifact(result.artifact_dir)
    with runner:
        assert runner.infer({"input": np.zeros((2, 3, 224, 224), np.float32)})["logits"].shape == (2, 1000)
