"""Hugging Face model folders (`config.json` and `model.safetensors` or `pytorch_model.bin`) as zoo modules.

`CvtForImageClassification`, `DeiTForImageClassification`, `DeiTForImageClassificationWithTeacher` and
`ViTForImageClassification` are the architectures the zoo's families compute: the folder's `config.json`
gives the family's configuration, `num_labels` and `id2label` the classes, `image_size` (ViT, DeiT) the
input, `preprocessor_config.json` the image transform, and the weights are renamed onto the zoo's module
(Hugging Face's legacy names, which `save_pretrained` writes, and transformers 5's in-memory names) and
loaded strictly. Reading a folder needs no `transformers`. Where it is installed, the zoo module is checked
against transformers' own forward on seeded inputs before anything is built from it, and the card says so.

Activation: Hugging Face's CvT port computes exact GELU where Microsoft's checkpoints were trained with
QuickGELU. An imported CvT folder keeps the folder's function (exact GELU), because the reference a user
validated a fine-tune against is transformers' forward: with it the zoo module is 1e-6 of the output scale from
transformers' on CvT-13 (measured, 4 seeded inputs), with QuickGELU 2.4e-2 (docs/models.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .card import ModelCard, Preprocessing
from .errors import CheckpointError, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .card import LoadedModel, ModelRequest

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes the zoo's transform computes
# The source check: the zoo module against transformers' forward on seeded inputs (fp32 parity's tolerance).
SOURCE_CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Architecture:
    """One supported `architectures[0]`: the zoo family, its builder config from `config.json`, its key names."""

    family: str
    config: Callable[[Mapping[str, Any]], dict[str, Any]]
    rename: Callable[[str], str | None]  # a Hugging Face key -> the zoo's (None: drop it)
    # The image processor's defaults at the config's image size, where the folder has no preprocessor_config.json.
    default_processor: Callable[[Mapping[str, Any]], dict[str, Any]]


def _vit_config(hf: Mapping[str, Any], dist_token: bool = False, dist_head: bool = False) -> dict[str, Any]:
    hidden, heads = int(hf.get("hidden_size", 768)), int(hf.get("num_attention_heads", 12))
    if hidden % heads:
        raise ModelError(f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return {"img_size": int(hf.get("image_size", 224)), "patch_size": int(hf.get("patch_size", 16)),
            "in_chans": int(hf.get("num_channels", 3)), "num_classes": _num_labels(hf), "embed_dim": hidden,
            "depth": int(hf.get("num_hidden_layers", 12)), "num_heads": heads,
            "mlp_ratio": int(hf.get("intermediate_size", 4 * hidden)) / hidden,
            "qkv_bias": bool(hf.get("qkv_bias", True)),
            "norm_eps": float(hf.get("layer_norm_eps", 1e-12)), "act": str(hf.get("hidden_act", "gelu")),
            "dist_token": dist_token, "dist_head": dist_head}


def _cvt_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    stages = len(hf.get("embed_dim", [64, 192, 384]))

    def per_stage(key: str, default: Any) -> list[Any]:
        value = hf.get(key, [default] * stages)
        return list(value) if isinstance(value, (list, tuple)) else [value] * stages

    fixed: dict[str, list[Any]] = {
        "cls_token": [False] * (stages - 1) + [True], "qkv_projection_method": ["dw_bn"] * stages,
        "kernel_qkv": [3] * stages, "stride_q": [1] * stages, "stride_kv": [2] * stages, "padding_q": [1] * stages,
        "padding_kv": [1] * stages}
    for key, supported in fixed.items():
        if per_stage(key, supported[0]) != list(supported):
            raise ModelError(f"config.json: {key} {per_stage(key, None)} is not supported; the zoo's CvT computes "
                             f"{supported} (Microsoft's released configurations)")
    bias = set(per_stage("qkv_bias", True))
    if len(bias) != 1:
        raise ModelError(f"config.json: qkv_bias {per_stage('qkv_bias', True)} differs between stages; the zoo's CvT "
                         "takes one value")
    return {"in_chans": int(hf.get("num_channels", 3)), "num_classes": _num_labels(hf),
            "embed_dims": tuple(per_stage("embed_dim", 64)), "depths": tuple(per_stage("depth", 1)),
            "num_heads": tuple(per_stage("num_heads", 1)), "patch_sizes": tuple(per_stage("patch_sizes", 3)),
            "patch_strides": tuple(per_stage("patch_stride", 2)),
            "patch_paddings": tuple(per_stage("patch_padding", 1)),
            "mlp_ratio": tuple(float(r) for r in per_stage("mlp_ratio", 4.0)), "qkv_bias": bias.pop(),
            "act": "gelu"}


def _num_labels(hf: Mapping[str, Any]) -> int:
    if "id2label" in hf:
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def _renamer(rules: list[tuple[str, str]]) -> Callable[[str], str | None]:
    compiled = [(re.compile(pattern), target) for pattern, target in rules]

    def rename(key: str) -> str | None:
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                return match.expand(target) if target else None
        return key  # unknown: kept, so the strict load names it

    return rename


_VIT_BLOCK = [  # legacy (what save_pretrained writes) and transformers 5's in-memory names
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"layers\.(\d+)\.attention\.(q|k|v)_proj\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"embeddings\.mask_token", ""),  # masked image modelling only
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"pooler\..*", ""),  # ViTModel's pooler: not read by the classifier
]


def _prefixed(prefix: str, rules: list[tuple[str, str]], heads: list[tuple[str, str]]) -> Callable[[str], str | None]:
    return _renamer([(rf"{prefix}\.{pattern}", target) for pattern, target in rules] + heads)


_CVT_RULES = [
    (r"cvt\.encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.projection\.(weight|bias)",
     r"stage\1.patch_embed.proj.\2"),
    (r"cvt\.encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.normalization\.(weight|bias)",
     r"stage\1.patch_embed.norm.\2"),
    (r"cvt\.encoder\.stages\.(\d+)\.cls_token", r"stage\1.cls_token"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.convolution_projection_(q|k|v)\w*"
     r"\.convolution_projection\.convolution\.weight", r"stage\1.blocks.\2.attn.conv_proj_\3.conv.weight"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.convolution_projection_(q|k|v)\w*"
     r"\.convolution_projection\.normalization\.(\w+)", r"stage\1.blocks.\2.attn.conv_proj_\3.bn.\4"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.projection_(q|k|v)\w*\.(weight|bias)",
     r"stage\1.blocks.\2.attn.proj_\3.\4"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.output\.dense\.(weight|bias)",
     r"stage\1.blocks.\2.attn.proj.\3"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.intermediate\.dense\.(weight|bias)",
     r"stage\1.blocks.\2.mlp.fc1.\3"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.output\.dense\.(weight|bias)", r"stage\1.blocks.\2.mlp.fc2.\3"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm_before\.(weight|bias)", r"stage\1.blocks.\2.norm1.\3"),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm_after\.(weight|bias)", r"stage\1.blocks.\2.norm2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]

def _vit_processor(hf: Mapping[str, Any]) -> dict[str, Any]:
    """ViTImageProcessor's defaults: a plain resize to the input size, bilinear, mean and std 0.5."""
    side = int(hf.get("image_size", 224))
    return {"size": {"height": side, "width": side}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}


def _deit_processor(hf: Mapping[str, Any]) -> dict[str, Any]:
    """DeiTImageProcessor's defaults (256 then a 224 crop), scaled to the input size; bicubic, ImageNet mean/std."""
    side = int(hf.get("image_size", 224))
    resized = round(side * 256 / 224)
    return {"size": {"height": resized, "width": resized}, "crop_size": {"height": side, "width": side},
            "do_center_crop": True, "resample": 3, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]}


def _cvt_processor(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The ConvNext processor Microsoft's CvT folders use: shortest edge 224, crop_pct 0.875, bicubic."""
    return {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]}


ARCHITECTURES: dict[str, Architecture] = {
    "ViTForImageClassification": Architecture(
        "deit", _vit_config, _prefixed("vit", _VIT_BLOCK, [(r"classifier\.(weight|bias)", r"head.\1")]),
        _vit_processor),
    "DeiTForImageClassification": Architecture(
        "deit", lambda hf: _vit_config(hf, dist_token=True),
        _prefixed("deit", _VIT_BLOCK, [(r"classifier\.(weight|bias)", r"head.\1")]), _deit_processor),
    "DeiTForImageClassificationWithTeacher": Architecture(
        "deit", lambda hf: _vit_config(hf, dist_token=True, dist_head=True),
        _prefixed("deit", _VIT_BLOCK, [(r"cls_classifier\.(weight|bias)", r"head.\1"),
                                       (r"distillation_classifier\.(weight|bias)", r"head_dist.\1")]),
        _deit_processor),
    "CvtForImageClassification": Architecture(
        "cvt", _cvt_config, _renamer(_CVT_RULES), _cvt_processor),
}


def load_hub_folder(request: ModelRequest) -> LoadedModel:
    """The zoo module a Hugging Face folder describes, its weights loaded strictly, and its card."""
    from .card import LoadedModel, is_hub_folder
    from .checkpoint import CheckpointInfo, check_finite, load_state_dict_strict

    folder = Path(request.model if request.model and is_hub_folder(request.model) else str(request.weights))
    hf = _read_json(folder / "config.json")
    names = hf.get("architectures") or []
    arch_name = names[0] if names else None
    if arch_name not in ARCHITECTURES:
        raise ModelError(f"{folder}: architecture {arch_name or '(none in config.json)'} is not supported; "
                         f"supported: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[arch_name]
    _check_zoo_name(request, arch, folder)
    config = arch.config(hf)
    if request.num_classes is not None and request.num_classes != config["num_classes"]:
        raise ModelError(f"--num-classes {request.num_classes}: {folder} has {config['num_classes']} labels "
                         "(config.json num_labels/id2label); drop --num-classes")
    preprocessing = _preprocessing(folder, arch, config, hf)
    if request.img_size is not None and request.img_size != preprocessing.input_size[-1]:
        raise ModelError(f"--img-size {request.img_size}: {folder} takes {preprocessing.input_size[-1]} "
                         "(config.json and preprocessor_config.json); drop --img-size")
    from .cvt import cvt
    from .deit import deit

    builder = {"deit": deit, "cvt": cvt}[arch.family]
    if arch.family == "cvt":
        config["img_size"] = preprocessing.input_size[-1]
    model = builder(**config)
    state_dict, sha256, files = _weights(folder)
    renamed: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        target = arch.rename(key)
        if target is not None:
            renamed[target] = tensor
    renamed = _packed_qkv(renamed)
    check_finite(renamed, folder)
    load_state_dict_strict(model, renamed, f"the {arch_name} in {folder}")
    model.eval()
    notes = [f"Hugging Face {arch_name} (config.json {', '.join(files)})"]
    if arch.family == "cvt":
        notes.append("activation: exact GELU, as Hugging Face's CvT computes it (Microsoft's checkpoints were trained "
                     "with QuickGELU; see docs/models.md)")
    notes.append(_source_check(folder, arch_name, model, preprocessing))
    card = _card(request, arch.family, model, config, preprocessing, hf, tuple(notes))
    return LoadedModel(model, card, CheckpointInfo(path=str(folder), sha256=sha256, container_key=None,
                                                   num_tensors=len(renamed)))


def _check_zoo_name(request: ModelRequest, arch: Architecture, folder: Path) -> None:
    """`export cvt_13 --weights FOLDER`: the variant named must be of the folder's family."""
    from .card import is_hub_folder
    from .zoo import get_model_info

    if request.model is None or is_hub_folder(request.model):
        return
    info = get_model_info(request.model)
    if info.family != arch.family:
        raise ModelError(f"{folder} holds a {arch.family} model, not {info.name} ({info.family}); "
                         f"export the folder itself: python -m deploy export {folder}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    return data


def _weights(folder: Path) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Every tensor of the folder's weights (sharded or not), one digest over the files, the files' names."""
    import hashlib

    from .checkpoint import file_sha256, read_checkpoint, read_safetensors, unwrap_state_dict

    found = next((name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        raise CheckpointError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if found.endswith(".index.json"):
        shards = sorted(set(_read_json(folder / found).get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{folder / found} maps no weights to shard files")
    else:
        shards = [found]
    state_dict: dict[str, torch.Tensor] = {}
    digest = hashlib.sha256()
    for shard in shards:
        path = folder / shard
        if path.suffix == ".safetensors":
            part = read_safetensors(path)
        else:
            part, _ = unwrap_state_dict(read_checkpoint(path), ())
        state_dict.update(part)
        digest.update(f"{shard}:{file_sha256(path)}\n".encode())
    return state_dict, digest.hexdigest(), shards


def _packed_qkv(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's separate query, key and value projections as the zoo's packed `qkv` (rows q, k, v)."""
    import torch

    out = dict(state_dict)
    for names in (("query", "key", "value"), ("q", "k", "v")):  # legacy names, transformers 5's
        for key in [k for k in state_dict if re.fullmatch(rf"blocks\.\d+\.attn\.{names[0]}\.(weight|bias)", k)]:
            prefix, kind = key.rsplit(f".{names[0]}.", 1)
            parts = [out.pop(f"{prefix}.{name}.{kind}", None) for name in names]
            if any(p is None for p in parts):
                raise CheckpointError(f"{prefix}: the {', '.join(names)} projections must all have a {kind}")
            out[f"{prefix}.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def _preprocessing(folder: Path, arch: Architecture, config: Mapping[str, Any], hf: Mapping[str, Any]) -> Preprocessing:
    """The image transform of `preprocessor_config.json` (else the architecture's processor defaults)."""
    path = folder / "preprocessor_config.json"
    processor = {**arch.default_processor(hf), **(_read_json(path) if path.is_file() else {})}
    resample = int(processor.get("resample", 3))
    if resample not in _RESAMPLE:
        raise ModelError(f"{path}: resample {resample} is not one of the transforms computed here "
                         f"({', '.join(f'{k} {v}' for k, v in _RESAMPLE.items())})")
    if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) * 255 - 1) > 1e-6:
        raise ModelError(f"{path}: rescale_factor {processor.get('rescale_factor')} is not 1/255")
    normalise = processor.get("do_normalize", True)
    mean = tuple(float(v) for v in processor.get("image_mean", [0.5] * 3)) if normalise else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in processor.get("image_std", [0.5] * 3)) if normalise else (1.0, 1.0, 1.0)
    size = processor.get("size", {})
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    if "shortest_edge" in size:  # ConvNext's processor (CvT): crop_pct below 384, a plain resize from 384
        edge = int(size["shortest_edge"])
        side, resize, crop_pct = (edge, "shorter", float(processor.get("crop_pct", 0.875))) if edge < 384 else (
            edge, "squash", 1.0)
    else:
        height, width = int(size.get("height", 224)), int(size.get("width", 224))
        side, resize, crop_pct = height, "squash", 1.0
        if crop:
            side = int(crop.get("height", height))
            crop_pct = side / height
            if int(crop.get("width", width)) / width != crop_pct or height != width:
                raise ModelError(f"{path}: a non-square resize or crop ({size}, {crop}) is not computed here")
    expected = config.get("img_size")
    if expected is not None and expected != side:
        raise ModelError(f"{path}: the processor makes {side}x{side} inputs, config.json's image_size is {expected}")
    channels = int(config.get("in_chans", 3))
    return Preprocessing((channels, side, side), mean, std, _RESAMPLE[resample], crop_pct, resize)  # type: ignore[arg-type]


def _source_check(folder: Path, arch_name: str, model: nn.Module, preprocessing: Preprocessing) -> str:
    """The zoo module against transformers' forward of the same folder, where transformers is installed."""
    try:
        import transformers
    except ImportError:
        return "not checked against transformers' forward: transformers is not installed"
    import torch

    reference = getattr(transformers, arch_name).from_pretrained(str(folder)).eval()
    x = torch.randn(2, *preprocessing.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = reference(pixel_values=x).logits
        got = model(x)
    scale = float(expected.abs().max()) or 1.0
    error = float((got - expected).abs().max()) / scale
    if error > SOURCE_CHECK_TOLERANCE:
        raise ModelError(f"{folder}: the zoo's {arch_name} differs from transformers' forward by {error:.2g} of the "
                         f"output scale (tolerance {SOURCE_CHECK_TOLERANCE:g}): this configuration is not reproduced")
    return f"checked against transformers {transformers.__version__} {arch_name}: {error:.2g} of the output scale"


def _card(request: ModelRequest, family: str, model: nn.Module, config: Mapping[str, Any],
          preprocessing: Preprocessing, hf: Mapping[str, Any], notes: tuple[str, ...]) -> ModelCard:
    from .complexity import count_macs, count_params

    id2label = hf.get("id2label") or {}
    try:
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if id2label else None
    except ValueError:
        raise ModelError("config.json: id2label keys must be class indices") from None
    return ModelCard(name=request.display_name, family=family, source="huggingface", preprocessing=preprocessing,
                     num_classes=int(config["num_classes"]), params=count_params(model),
                     macs_g=count_macs(model, preprocessing.input_size) / 1e9, base=None, overrides={},
                     config=dict(config), labels=labels, labels_source="config.json id2label" if labels else None,
                     notes=notes)
