"""The user's own model: fine-tuned checkpoints (classes and size inferred, embeddings resampled), safetensors, Hugging
Face folders, factories and modules through the Python API, `predict`, and every bad input as one line."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from safetensors.torch import save_file

import models
from deploy.cli import main
from deploy.export import load_artifact
from models import ModelRequest, load_model
from models.finetune import resample_grid, resample_sequence

ROOT = Path(__file__).resolve().parents[1]
transformers = pytest.importorskip("transformers", reason="the Hugging Face tests need transformers (the dev extra)")


def _one_error_line(capsys) -> str:
    return error_line(capsys.readouterr().err)


def _fine_tuned(name: str, classes: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint of `name` fine-tuned to `classes` at `size`: the 224 model's weights, embeddings resized as
    timm does, a fresh head (what a fine-tune starts from)."""
    info = models.get_model_info(name)
    torch.manual_seed(seed)
    source = info.build().state_dict()
    target = info.build(num_classes=classes, img_size=size).state_dict()
    layout = info.fine_tuning.layout
    for key, tensor in target.items():
        if key not in source or source[key].shape == tensor.shape:
            target[key] = source.get(key, tensor)
        elif layout(key, info.config) is not None and layout(key, info.config).kind == "grid":
            target[key] = resample_grid(source[key], tensor.shape[1] - layout(key, info.config).prefix,
                                        layout(key, info.config).prefix)
        elif layout(key, info.config) is not None:
            target[key] = resample_sequence(source[key], tensor.shape[1])
    return target


# ---------------------------------------------------------------- fine-tuned checkpoints


def test_resampling_an_embedding_to_its_own_size_changes_nothing():
    grid = torch.randn(1, 1 + 14 * 14, 8)
    torch.testing.assert_close(resample_grid(grid, 14 * 14, 1), grid)
    line = torch.randn(1, 97, 8)
    torch.testing.assert_close(resample_sequence(line, 97), line)
    assert resample_grid(grid, 16 * 16, 1).shape == (1, 257, 8)
    torch.testing.assert_close(resample_grid(grid, 16 * 16, 1)[:, :1], grid[:, :1]), "the cls entry is kept"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("deit_ti", 288), ("vit_resnas_tiny", 448), ("cvt_13", 288)])
def test_a_fine_tune_of_each_family_at_another_size_loads_with_its_size_and_classes_inferred(tmp_path, name, size):
    path = tmp_path / "ft.pth"
    torch.save({"model": _fine_tuned(name, 7, size)}, path)
    request = ModelRequest(name, weights=path, img_size=None if name != "cvt_13" else size)
    loaded = load_model(request)
    card = loaded.card
    assert card.num_classes == 7 and card.input_size == (3, size, size)
    assert card.overrides == {"num_classes": 7, "img_size": size} and card.base == models.resolve_name(name)
    assert any(line.startswith("num_classes 7 from") for line in card.inferred)
    assert (name == "cvt_13") == (not any(line.startswith("img_size") for line in card.inferred)), \
        "CvT has no position embedding: its size is given, not inferred"
    assert card.macs_g > models.get_model_info(name).macs_g * (size / 224) ** 2 * 0.9, "MACs follow the size"
    assert loaded.module(torch.zeros(1, 3, size, size)).shape == (1, 7)


def test_a_224_checkpoint_loads_at_another_size_with_its_embeddings_resampled(tmp_path):
    path = tmp_path / "s1.pth"
    torch.save(models.get_model_info("hvt_s_1").build().state_dict(), path)
    card = load_model(ModelRequest("hvt_s_1", weights=path, img_size=256)).card
    assert card.overrides == {"img_size": 256} and card.num_classes == 1000
    assert card.notes == ("pos_embed resampled from 196 to 256 positions, bicubic on its 2-D grid",
                          "blocks.0.pos_embed resampled from 97 to 127 positions, linearly along its token sequence")
    assert card.labels[:2] == ("tench", "goldfish"), "a 1000-class head gets ImageNet-1k's class names"


def test_safetensors_checkpoints_load_as_pth_ones_do(tmp_path):
    state = _fine_tuned("hvt_digits", 4, 32)
    save_file(state, str(tmp_path / "ft.safetensors"))
    torch.save(state, tmp_path / "ft.pth")
    cards = [load_model(ModelRequest("hvt_digits", weights=tmp_path / f)) for f in ("ft.safetensors", "ft.pth")]
    assert cards[0].card.num_classes == cards[1].card.num_classes == 4
    assert cards[0].weights.path.endswith("ft.safetensors")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(cards[0].module(x), cards[1].module(x))


@pytest.mark.slow
def test_a_fine_tuned_hvt_s_1_exports_with_parity_on_two_runtimes_and_predicts_its_class(tmp_path, capsys):
    """HVT-S-1 fine-tuned to 37 classes at 256 px: export infers both, parity passes on ONNX Runtime and OpenVINO,
    and `predict` names the class PyTorch gives an image."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e .[openvino])")
    from PIL import Image

    weights = tmp_path / "hvt_s_1_pets.pth"
    torch.save({"model": _fine_tuned("hvt_s_1", 37, 256)}, weights)
    labels = tmp_path / "pets.txt"
    labels.write_text("\n".join(f"breed {i}" for i in range(37)) + "\n")
    out = tmp_path / "art"
    for target in ("onnxruntime", "openvino"):
        assert main(["export", "hvt_s_1", "--weights", str(weights), "--target", target, "--batch", "1",
                     "--labels", str(labels), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "inferred: num_classes 37 from head.weight (37, 384)" in printed
        assert "inferred: img_size 256 from pos_embed (1, 256, 384)" in printed and "parity vs PyTorch" in printed
        manifest = json.loads((out / "hvt_s_1" / f"{target}-fp32" / "manifest.json").read_text())
        assert manifest["status"] == "ok" and manifest["parity"]["passed"]
        model = manifest["model"]
        assert model["input_size"] == [3, 256, 256] and model["num_classes"] == 37
        assert model["base"] == "hvt_s_1" and model["overrides"] == {"num_classes": 37, "img_size": 256}
        assert model["labels"][3] == "breed 3" and model["labels_source"] == "given"
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((300, 360, 3)) * 255).astype(np.uint8)).save(image)
    loaded = load_model(ModelRequest("hvt_s_1", weights=weights))
    from deploy.data.images import read_images

    with torch.inference_mode():
        expected = int(loaded.module(torch.from_numpy(read_images([image], loaded.card.preprocessing))).argmax())
    assert main(["predict", str(out / "hvt_s_1" / "onnxruntime-fp32"), str(image), "--top", "3", "--json"]) == 0
    [prediction] = json.loads(capsys.readouterr().out)
    assert prediction["top"][0]["index"] == expected and prediction["top"][0]["label"] == f"breed {expected}"
    assert len(prediction["top"]) == 3 and prediction["top"][0]["probability"] >= prediction["top"][1]["probability"]


# ---------------------------------------------------------------- Hugging Face folders


def _hub_folder(folder: Path, config, kind, processor=None) -> Path:
    torch.manual_seed(0)
    model = kind(config).eval()
    model.save_pretrained(str(folder))
    if processor is not None:
        processor.save_pretrained(str(folder))
    return folder


def _vit_config(cls, labels: int = 4, **extra):
    return cls(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, image_size=32,
               patch_size=8, num_labels=labels, id2label={i: f"kind {i}" for i in range(labels)},
               label2id={f"kind {i}": i for i in range(labels)}, **extra)


HUB_CASES = {
    "vit": lambda: (_vit_config(transformers.ViTConfig), transformers.ViTForImageClassification),
    "deit": lambda: (_vit_config(transformers.DeiTConfig), transformers.DeiTForImageClassification),
    "deit-distilled": lambda: (_vit_config(transformers.DeiTConfig),
                               transformers.DeiTForImageClassificationWithTeacher),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HUB_CASES))
def test_a_hugging_face_vit_or_deit_folder_exports_and_matches_transformers(tmp_path, capsys, case):
    config, kind = HUB_CASES[case]()
    folder = _hub_folder(tmp_path / case, config, kind)
    out = tmp_path / "art"
    assert main(["export", str(folder), "--target", "onnxruntime", "--batch", "1", "--batch", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checked against transformers" in printed
    artifact = out / case / "onnxruntime-fp32"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model"]["labels"] == [f"kind {i}" for i in range(4)]
    assert manifest["model"]["source"] == "huggingface" and manifest["parity"]["passed"]
    reference = kind.from_pretrained(str(folder)).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    runner, _ = load_artifact(artifact)
    with runner, torch.inference_mode():
        got = runner.infer({"input": x})["logits"]
        expected = reference(pixel_values=torch.from_numpy(x)).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), "fp32 parity with transformers' forward"


@pytest.mark.slow
def test_a_hugging_face_cvt_13_folder_exports_and_matches_transformers(tmp_path, capsys):
    config = transformers.CvtConfig(num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    folder = _hub_folder(tmp_path / "cvt-13-pets", config, transformers.CvtForImageClassification)
    out = tmp_path / "art"
    assert main(["export", str(folder), "--target", "onnxruntime", "--batch", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "activation: exact GELU" in printed and "checked against transformers" in printed
    artifact = out / "cvt-13-pets" / "onnxruntime-fp32"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model"]["labels"] == ["a", "b", "c"] and manifest["model"]["config"]["act"] == "gelu"
    assert manifest["model"]["config"]["depths"] == [1, 2, 10] and manifest["parity"]["passed"]
    reference = transformers.CvtForImageClassification.from_pretrained(str(folder)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    runner, _ = load_artifact(artifact)
    with runner, torch.inference_mode():
        got = runner.infer({"input": x})["logits"]
        expected = reference(pixel_values=torch.from_numpy(x)).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_hugging_face_processor_sets_the_preprocessing(tmp_path):
    config, kind = HUB_CASES["deit"]()
    processor = transformers.DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32,
                                                "width": 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.5, 0.5])
    folder = _hub_folder(tmp_path / "deit", config, kind, processor)
    pre = load_model(ModelRequest(str(folder))).card.preprocessing
    assert (pre.input_size, pre.mean, pre.resize, pre.crop_pct) == ((3, 32, 32), (0.1, 0.2, 0.3), "squash", 0.8)
    assert pre.interpolation == "bicubic"


# ---------------------------------------------------------------- the Python API and factories


class Mixer(torch.nn.Module):
    """Self-attention over the tokens, the user's own way: one qkv projection and two heads."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(mixed.transpose(1, 2).reshape(batch, tokens, dim))


class Tiny(torch.nn.Module):
    """A user's own classifier: a conv stem with BatchNorm, an attention block, a head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, 4), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.block = Mixer()
        self.head = torch.nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        return self.head((tokens + self.block(tokens)).mean(1))


@pytest.mark.slow
def test_the_python_api_exports_benches_and_predicts_a_custom_module(tmp_path):
    import deploy
    from deploy import bench, export, predict
    from models import Preprocessing

    model = Tiny().eval()
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    pre = Preprocessing((3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    result = export(model, "onnxruntime", preprocessing=pre, labels=["a", "b", "c", "d", "e"], out=tmp_path,
                    batch=(1, 2))
    assert deploy.export is export and callable(export), "the package is the function"
    manifest = result.manifest
    assert result.exit_code == 0 and manifest.status == "ok" and manifest.parity.passed
    assert manifest.model.name == "tiny" and manifest.model.family == "custom" and manifest.model.source == "module"
    assert manifest.model.batchnorm_folded == 1 and manifest.model.mean == [0.5, 0.5, 0.5]
    changed = {r.name: r.changed for r in manifest.onnx.passes}
    assert changed["attention-canonical"] == 1, "passes fire on foreign graphs where their patterns match"
    assert changed["pool1d-to-2d"] == 0 and changed["batchnorm-fold"] == 0, "and say where they do not"
    document = bench(model, ["onnxruntime", "torch"], preprocessing=pre, out=tmp_path / "bench", runs=3, warmup_s=0)
    assert [(r.model, r.target, r.status) for r in document.results] == [("tiny", "onnxruntime", "ok"),
                                                                        ("tiny", "torch", "ok")]
    assert all(r.latency_ms.p50 > 0 and r.family == "custom" for r in document.results)
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image)
    [prediction] = predict(result.artifact_dir, [image], top=2)
    with torch.inference_mode():
        expected = model(torch.full((1, 3, 32, 32), (200 / 255 - 0.5) / 0.25)).softmax(-1)[0]
    assert prediction.top[0].label == "abcde"[int(expected.argmax())]
    assert prediction.top[0].probability == pytest.approx(float(expected.max()), abs=1e-4)


def test_the_profile_of_a_custom_module_attributes_its_top_level_children(tmp_path, capsys):
    from deploy import export

    result = export(Tiny(), "onnxruntime", input_size=(3, 32, 32), out=tmp_path, batch=(1,))
    assert main(["profile", str(result.artifact_dir), "--runs", "3", "--warmup", "1"]) == 0
    units = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("units:"))
    assert "stem" in units and "block" in units and "head" in units


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit", "cvt"])
def test_hugging_face_models_go_through_the_python_api_as_modules(tmp_path, kind):
    from deploy import bench, export

    if kind == "vit":
        config, cls = _vit_config(transformers.ViTConfig), transformers.ViTForImageClassification
    else:
        config = transformers.CvtConfig(embed_dim=[16, 32, 48], depth=[1, 2, 3], num_heads=[1, 2, 3], num_labels=4)
        cls = transformers.CvtForImageClassification
    torch.manual_seed(0)
    module = cls(config).eval()
    result = export(module, "onnxruntime", input_size=(3, 32, 32) if kind == "cvt" else None, out=tmp_path,
                    batch=(1,), name=f"hf-{kind}")
    assert result.manifest.status == "ok" and result.manifest.parity.passed
    assert result.manifest.model.num_classes == 4 and result.manifest.model.input_size == [3, 32, 32]
    document = bench(module, "onnxruntime", input_size=(3, 32, 32) if kind == "cvt" else None, out=tmp_path, runs=2,
                     warmup_s=0, name=f"hf-{kind}")
    assert document.results[0].status == "ok" and document.results[0].latency_ms.p50 > 0


@pytest.mark.slow
def test_a_model_factory_on_the_command_line_exports_and_benches(tmp_path, capsys):
    factory = tmp_path / "mine.py"
    factory.write_text(textwrap.dedent("""
        import torch

        def build(num_classes=3):
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4,
                                                                                                          num_classes))
    """))
    out = tmp_path / "art"
    spec = f"{factory}:build"
    assert main(["export", "mynet", "--model-factory", spec, "--num-classes", "6", "--img-size", "32",
                 "--batch", "1", "--out", str(out)]) == 0
    manifest = json.loads((out / "mynet" / "onnxruntime-fp32" / "manifest.json").read_text())
    assert manifest["model"]["num_classes"] == 6 and manifest["model"]["config"] == {"factory": spec}
    assert any("preprocessing not given" in note for note in manifest["model"]["notes"])
    capsys.readouterr()
    assert main(["bench", "mynet", "--model-factory", spec, "--img-size", "32", "--target", "onnxruntime",
                 "--runs", "2", "--warmup", "0", "--json", str(tmp_path / "r.json"), "--out", str(out),
                 "--no-progress"]) == 0
    [row] = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["model"] == "mynet" and row["status"] == "ok" and row["family"] == "custom"


# ---------------------------------------------------------------- runtime options survive a reload


@pytest.mark.slow
def test_a_core_ml_artifact_reloads_with_its_compute_units(tmp_path):
    pytest.importorskip("coremltools", reason="coremltools is not installed (pip install -e .[coreml])")
    assert main(["export", "hvt_digits", "--target", "coreml", "--fp32", "--option", "compute_units=CPU_ONLY",
                 "--batch", "1", "--out", str(tmp_path)]) == 0
    artifact = tmp_path / "hvt_digits" / "coreml-fp32"
    runner, manifest = load_artifact(artifact)
    assert manifest.engine.options["compute_units"] == "CPU_ONLY" and runner.units == "CPU_ONLY"
    runner, _ = load_artifact(artifact, options={"compute_units": "CPU_AND_NE"})
    assert runner.units == "CPU_AND_NE", "an option given at load overrides the saved one"


# ---------------------------------------------------------------- bad input: one line, nothing published


def test_a_checkpoint_of_another_configuration_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.pth"
    torch.save(models.get_model_info("hvt_ti_1").build().state_dict(), path)  # 192 wide, not hvt_s_1's 384
    assert main(["export", "hvt_s_1", "--weights", str(path), "--out", str(tmp_path / "art")]) == 2
    line = _one_error_line(capsys)
    assert "checkpoint does not match hvt_s_1" in line and "mis-shaped keys" in line
    assert not (tmp_path / "art" / "hvt_s_1").exists()


def test_an_unsupported_hugging_face_architecture_names_the_supported_ones(tmp_path, capsys):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    assert main(["export", str(folder), "--out", str(tmp_path / "art")]) == 2
    line = _one_error_line(capsys)
    assert "BertForMaskedLM is not supported" in line and "CvtForImageClassification" in line
    assert "ViTForImageClassification" in line


@pytest.mark.parametrize(("model", "size", "multiple"), [("hvt_s_1", 250, 16), ("vit_resnas_tiny", 252, 56),
                                                         ("cvt_13", 100, 16)])
def test_an_img_size_off_the_patch_stride_is_one_line(tmp_path, capsys, model, size, multiple):
    assert main(["export", model, "--img-size", str(size), "--out", str(tmp_path / "art")]) == 2
    assert f"multiples of {multiple}" in _one_error_line(capsys)
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").iterdir())


def test_a_factory_that_returns_no_module_is_one_line(tmp_path, capsys):
    factory = tmp_path / "bad.py"
    factory.write_text("def build():\n    return {'not': 'a module'}\n")
    assert main(["export", "x", "--model-factory", f"{factory}:build", "--img-size", "32",
                 "--out", str(tmp_path / "art")]) == 2
    assert "returned a dict, not a torch.nn.Module" in _one_error_line(capsys)
    assert main(["export", "x", "--model-factory", f"{factory}:nothing", "--out", str(tmp_path / "art")]) == 2
    assert "has no function nothing" in _one_error_line(capsys)
    assert main(["export", "x", "--model-factory", "no_such_package.mod:build", "--out", str(tmp_path / "a")]) == 2
    assert "cannot import no_such_package.mod" in _one_error_line(capsys)


@pytest.mark.slow
def test_predict_on_an_image_that_does_not_decode_is_one_line(tmp_path, capsys):
    assert main(["export", "hvt_digits", "--batch", "1", "--out", str(tmp_path)]) == 0
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "hvt_digits" / "onnxruntime-fp32"), str(bad)]) == 2
    assert "cannot read image" in _one_error_line(capsys)


@pytest.mark.slow
def test_predict_prints_the_digits_classes(tmp_path, capsys):
    from PIL import Image

    from deploy.data.datasets import DIGITS_FILE

    with np.load(DIGITS_FILE) as data:
        pixels, label = data["images"][0], int(data["labels"][0])
    image = tmp_path / "digit.png"
    Image.fromarray(pixels.astype(np.uint8), "L").save(image)
    assert main(["export", "hvt_digits", "--batch", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "hvt_digits" / "onnxruntime-fp32"), str(image), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and lines[1].split()[1] == str(label), lines


@pytest.mark.slow
def test_the_artifact_is_usable_with_plain_onnxruntime(tmp_path):
    """What the README tells a user without this package: the manifest's preprocessing and labels, the ONNX file."""
    import onnxruntime as ort
    from PIL import Image

    assert main(["export", "deit_digits", "--batch", "1", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "deit_digits" / "onnxruntime-fp32"
    manifest = json.loads((folder / "manifest.json").read_text())["model"]
    image = Image.new("RGB", (40, 40), (30, 30, 30))
    _, height, width = manifest["input_size"]
    scale = round(height / manifest["crop_pct"])
    image = image.resize((scale, scale), Image.BICUBIC).crop((0, 0, width, height))
    x = (np.asarray(image, np.float32) / 255 - manifest["mean"]) / manifest["std"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
    assert logits.shape == (1, 10) and manifest["labels"][int(logits.argmax())] in [str(d) for d in range(10)]
    from deploy import predict

    image_file = tmp_path / "grey.png"
    Image.new("RGB", (40, 40), (30, 30, 30)).save(image_file)
    [prediction] = predict(folder, [image_file], top=1)
    assert prediction.top[0].index == int(logits.argmax())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
