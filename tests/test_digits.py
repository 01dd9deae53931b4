"""The shipped digits reference model: real accuracy in PyTorch, and engines that agree with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import models
from deploy.data import datasets
from deploy.export import ExportRequest, accuracy, export, load_artifact
from models.hvt import HVT

WEIGHTS = Path(models.__file__).parent / "weights" / "hvt_digits.pth"


@pytest.fixture(scope="module")
def digits():
    info = models.get_model_info("hvt_digits")
    model = models.create_model("hvt_digits")
    dataset = datasets.load_dataset("digits", info)
    return info, model, dataset, accuracy.torch_logits(model, dataset.images)


def test_shipped_weights_are_small_and_load_into_a_real_hvt(digits):
    _, model, _, _ = digits
    assert WEIGHTS.stat().st_size < 1_000_000
    assert isinstance(model, HVT) and model.token_counts == [64, 31, 15], "two pooling stages"
    assert model.weights_info is not None and model.weights_info.path == str(WEIGHTS)
    meta = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert meta["sha256"] == model.weights_info.sha256, "the metadata describes the shipped file"


def test_pytorch_held_out_top1_is_at_least_95_percent_and_matches_the_registry(digits):
    info, _, dataset, logits = digits
    assert len(dataset) == 450 and sorted(set(dataset.labels.tolist())) == list(range(10))
    top1 = accuracy.topk(logits, dataset.labels, 1)
    assert top1 >= 0.95
    assert info.published_top1 == pytest.approx(100 * top1, abs=0.005), "list shows the measured figure"
    assert accuracy.topk(logits, dataset.labels, 5) >= top1


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_fp32_engines_agree_with_pytorch_on_the_held_out_set(target, digits, tmp_path):
    if target == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install -e .[openvino])")
    info, _, dataset, reference = digits
    result = export(ExportRequest("hvt_digits", target, "fp32", out=tmp_path, batch=(1, 50)))
    runner, _ = load_artifact(result.artifact_dir)
    with runner:
        logits = accuracy.predict(lambda x: runner.infer({"input": x})["logits"], dataset.images, 50)
    record = accuracy.accuracy_record(logits, reference, dataset)
    assert record["agreement"] >= 0.995
    assert abs(record["top1"] - record["reference_top1"]) <= 0.005


def test_the_held_out_set_is_disjoint_from_the_training_split():
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed (pip install -e .[dev])")
    from sklearn.datasets import load_digits

    with np.load(datasets.DIGITS_FILE) as data:
        images, labels, indices = data["images"], data["labels"], data["indices"]
    source = load_digits()
    assert np.array_equal(images, np.round(source.images[indices] * 255 / 16).astype(np.uint8))
    assert np.array_equal(labels, source.target[indices])
    script_path = Path(__file__).parent.parent / "scripts" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    split = script.load_split(seed=0)
    assert np.array_equal(split["test"], indices) and not set(split["train"]) & set(indices)


def test_an_image_folder_gives_the_same_labels_and_predictions_as_the_shipped_set(digits, tmp_path):
    info, model, dataset, reference = digits
    with np.load(datasets.DIGITS_FILE) as data:
        pixels, labels = data["images"][:40], data["labels"][:40]
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = tmp_path / f"digit_{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{i:03d}.png")
    folder_set = datasets.load_dataset(str(tmp_path), info)
    assert folder_set.classes == [f"digit_{d}" for d in sorted(set(labels.tolist()))]
    assert len(folder_set) == 40
    logits = accuracy.torch_logits(model, folder_set.images)
    expected = sorted((int(label), int(reference[i].argmax())) for i, label in enumerate(labels))
    # Same images, same transform: every prediction is the shipped set's, every label its class folder.
    assert sorted(zip(folder_set.labels.tolist(), logits.argmax(-1).tolist(), strict=True)) == expected


def test_an_image_folder_with_a_class_list_maps_names_to_model_indices(tmp_path):
    info = models.get_model_info("hvt_digits")
    for name in ("seven", "two"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8), 0).save(tmp_path / name / "a.png")
    (tmp_path / "classes.txt").write_text("\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven",
                                                     "eight", "nine"]))
    dataset = datasets.load_dataset(str(tmp_path), info)
    assert sorted(dataset.labels.tolist()) == [2, 7]
    limited = datasets.load_dataset(str(tmp_path), info, limit=1)
    assert len(limited) == 1


def test_calibration_images_load_from_a_folder(tmp_path):
    """`export --calib-dir`: images under a folder, preprocessed for the model, at most `limit` of them."""
    from deploy.data.images import load_images
    from deploy.errors import DeployError

    info = models.get_model_info("hvt_digits")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8 + i, 8), 40 * i).save(nested / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path, info, limit=2)
    assert images.shape == (2, *info.input_size) and images.dtype == np.float32
    assert not np.allclose(images[0], images[1])  # two different files, not one repeated
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DeployError, match="no images"):
        load_images(empty, info, 1)
    (nested / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DeployError, match="cannot read image .*broken.png"):
        load_images(tmp_path, info, limit=10)
