"""ViT-ResNAS: the searched network_defs, counts, official checkpoint containers and block semantics."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from helpers import randomise_batchnorm

from models import CheckpointError, create_model, get_model_info
from models.complexity import count_macs, count_params, meta_model
from models.resnas import (
    VIT_RESNAS_MEDIUM,
    VIT_RESNAS_SMALL,
    VIT_RESNAS_TINY,
    PatchConvEmbed,
    ResidualSpatialReduction,
    ViTResNAS,
    vit_resnas,
)

# A small network_def with every block type (and a bypassed block) for fast numerics at 56x56:
# patch 14 -> 4x4 grid -> 2x2 -> 1x1.
SMALL_DEF = (
    (4, 16),
    (1, (16, 2, 8), (16, 40), 1),
    (3, 16, 24),
    (1, (24, 3, 8), (24, 48), 1),
    (1, (24, 3, 8), (24, 48), 0),
    (3, 24, 32),
    (1, (32, 2, 16), (32, 64), 1),
    (2, 32, 10),
)


def small_resnas(seed: int = 0) -> ViTResNAS:
    torch.manual_seed(seed)
    return randomise_batchnorm(ViTResNAS(SMALL_DEF, img_size=56), seed)


# --- the searched networks ----------------------------------------------------------------------

def stages(network_def) -> list[dict]:
    out = [{"dim": network_def[0][1], "heads": [], "head_dims": set(), "mlp": []}]
    for block in network_def[1:-1]:
        if block[0] == 3:
            out.append({"dim": block[2], "heads": [], "head_dims": set(), "mlp": []})
        else:
            out[-1]["heads"].append(block[1][1])
            out[-1]["head_dims"].add(block[1][2])
            out[-1]["mlp"].append(block[2][1])
    return out


@pytest.mark.parametrize(
    ("network_def", "dims", "heads", "mlp_ranges"),
    [
        (VIT_RESNAS_TINY, (176, 352, 704),
         ([3, 3, 3, 4, 4], [10, 8, 8, 8, 10, 10], [10, 10, 10, 8, 8]),
         ((576, 704), (1024, 1408), (1792, 2816))),
        (VIT_RESNAS_SMALL, (220, 440, 880),
         ([5, 5, 7, 5, 5, 5], [10, 10, 10, 10, 12, 12], [16, 12, 16, 12, 14]),
         ((720, 880), (1440, 1920), (2240, 3200))),
        (VIT_RESNAS_MEDIUM, (240, 640, 880),
         ([7, 6, 7, 8, 7, 8, 6], [10, 14, 14, 16, 14, 16, 16], [16, 10, 16, 12, 16, 14]),
         ((800, 960), (1120, 1920), (3200, 3840))),
    ],
)
def test_network_defs_agree_with_the_reference_table(network_def, dims, heads, mlp_ranges) -> None:
    parsed = stages(network_def)
    assert [s["dim"] for s in parsed] == list(dims)
    assert [s["heads"] for s in parsed] == [list(h) for h in heads]
    assert [s["head_dims"] for s in parsed] == [{32}, {48}, {64}]
    assert [(min(s["mlp"]), max(s["mlp"])) for s in parsed] == list(mlp_ranges)
    assert network_def[-1] == (2, dims[-1], 1000)
    assert all(block[3] == 1 for block in network_def if block[0] == 1)


@pytest.mark.parametrize(
    ("name", "params_m", "macs_g"),
    [("vit_resnas_tiny", 40.8, 1.78), ("vit_resnas_small", 63.7, 2.85), ("vit_resnas_medium", 96.4, 4.51)],
)
def test_counts_match_the_reference(name: str, params_m: float, macs_g: float) -> None:
    model = meta_model(name)
    live_params = count_params(model) / 1e6
    live_macs = count_macs(model, (3, 224, 224)) / 1e9
    assert live_params == pytest.approx(params_m, rel=5e-3)
    assert live_macs == pytest.approx(macs_g, rel=2e-2)
    info = get_model_info(name)
    assert info.params_m == pytest.approx(live_params, abs=1e-3)
    assert info.macs_g == pytest.approx(live_macs, abs=1e-3)
    assert not any(k.startswith("patch_head") for k in model.state_dict())


def test_registry_entries() -> None:
    info = get_model_info("vit_resnas_tiny")
    assert info.checkpoint_keys[0] == "model_ema"
    assert info.published_top1 is None and "not retrieved" in info.notes
    assert (info.input_size, info.crop_pct, info.interpolation) == ((3, 224, 224), 0.875, "bicubic")


# --- official checkpoint layout -----------------------------------------------------------------

def official_resnas_state_dict(network_def, grid: int = 16, mid: int = 24) -> dict[str, torch.Tensor]:
    """Key names and shapes documented for vit-search checkpoints (docs/models.md, ViT-ResNAS),
    including the training-only `patch_head`."""
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, *shape: int) -> None:
        sd[key] = torch.randn(*shape) * 0.02

    dim = network_def[0][1]
    for i, cin in ((1, 3), (2, mid), (3, mid)):
        put(f"patch_embed.conv{i}.conv.weight", mid, cin, 3, 3)
        for stat in ("weight", "bias", "running_mean"):
            put(f"patch_embed.conv{i}.bn.{stat}", mid)
        sd[f"patch_embed.conv{i}.bn.running_var"] = torch.rand(mid) + 0.5
        sd[f"patch_embed.conv{i}.bn.num_batches_tracked"] = torch.tensor(5000)
    put("patch_embed.conv_proj.weight", dim, mid, 7, 7)
    put("patch_embed.conv_proj.bias", dim)
    put("tokens", 1, 1, dim)
    put("pos_embed", 1, 1 + grid * grid, dim)
    for idx, block in enumerate(network_def[1:-1]):
        prefix = f"blocks.{idx}."
        if block[0] == 1:
            _, (_, heads, head_dim), (_, hidden), _ = block
            inner = heads * head_dim
            for norm in ("norm1", "norm2"):
                put(prefix + f"{norm}.weight", dim)
                put(prefix + f"{norm}.bias", dim)
            put(prefix + "attn.qkv.weight", 3 * inner, dim)
            put(prefix + "attn.qkv.bias", 3 * inner)
            put(prefix + "attn.proj.weight", dim, inner)
            put(prefix + "attn.proj.bias", dim)
            put(prefix + "mlp.fc1.weight", hidden, dim)
            put(prefix + "mlp.fc1.bias", hidden)
            put(prefix + "mlp.fc2.weight", dim, hidden)
            put(prefix + "mlp.fc2.bias", dim)
        else:
            _, cin, cout = block
            grid //= 2
            put(prefix + "norm.weight", cin)
            put(prefix + "norm.bias", cin)
            put(prefix + "patch_reduce.weight", cout, cin, 3, 3)
            put(prefix + "patch_reduce.bias", cout)
            put(prefix + "token_transform.weight", cout, cin)
            put(prefix + "token_transform.bias", cout)
            put(prefix + "pos_embed", 1, grid * grid, cout)
            dim = cout
    put("norm.weight", dim)
    put("norm.bias", dim)
    for head in ("cls_head", "patch_head"):
        put(f"{head}.weight", 1000, dim)
        put(f"{head}.bias", 1000)
    return sd


@pytest.fixture(scope="module")
def tiny_container(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(1)
    model_sd = official_resnas_state_dict(VIT_RESNAS_TINY)
    # The EMA copy shares every tensor (saved once) except the ones the test reads back.
    ema_sd = dict(model_sd)
    for key in ("cls_head.bias", "tokens", "blocks.12.pos_embed"):
        ema_sd[key] = model_sd[key] + 1.0
    container = {
        "model": model_sd, "model_ema": ema_sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
        "lr_scheduler": {"last_epoch": 300}, "epoch": 299,
        "args": argparse.Namespace(model="flexible_vit_sr_patch14_224_patch_output", drop_path=0.2),
    }
    path = tmp_path_factory.mktemp("resnas") / "best_ema_checkpoint.pth.tar"
    torch.save(container, path)
    return str(path), model_sd, ema_sd


def test_documented_layout_has_the_reference_parameter_count(tiny_container) -> None:
    _, model_sd, _ = tiny_container
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(v.numel() for k, v in model_sd.items() if not k.endswith(buffers) and "patch_head" not in k)
    assert params / 1e6 == pytest.approx(40.8, rel=5e-3)


def test_training_container_loads_ema_by_default(tiny_container) -> None:
    path, _, ema_sd = tiny_container
    model = create_model("vit_resnas_tiny", weights=path)
    assert model.weights_info.container_key == "model_ema"
    loaded = model.state_dict()
    for key in ("cls_head.bias", "tokens", "blocks.12.pos_embed", "patch_embed.conv2.bn.running_var"):
        torch.testing.assert_close(loaded[key], ema_sd[key])


def test_use_ema_false_loads_the_raw_weights(tiny_container) -> None:
    path, model_sd, _ = tiny_container
    model = create_model("vit_resnas_tiny", weights=path, use_ema=False)
    assert model.weights_info.container_key == "model"
    torch.testing.assert_close(model.state_dict()["cls_head.bias"], model_sd["cls_head.bias"])


def test_a_wrong_key_fails_naming_it(tiny_container, tmp_path) -> None:
    _, model_sd, _ = tiny_container
    broken = dict(model_sd)
    broken["blocks.5.token_proj.weight"] = broken.pop("blocks.5.token_transform.weight")
    path = tmp_path / "broken.pth"
    torch.save({"model": broken, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as excinfo:
        create_model("vit_resnas_tiny", weights=path)
    assert "blocks.5.token_transform.weight" in str(excinfo.value)
    assert "blocks.5.token_proj.weight" in str(excinfo.value)


# --- block semantics against the official forward -----------------------------------------------

def test_spatial_reduction_matches_the_official_forward() -> None:
    torch.manual_seed(0)
    block = ResidualSpatialReduction(grid=4, in_dim=6, out_dim=10).eval()
    x = torch.randn(2, 1 + 16, 6)
    normed = F.layer_norm(x, (6,), block.norm.weight, block.norm.bias, 1e-6)
    patches = normed[:, 1:].transpose(1, 2).reshape(2, 6, 4, 4)
    patches = F.conv2d(patches, block.patch_reduce.weight, block.patch_reduce.bias, stride=2, padding=1)
    patches = patches.flatten(2).transpose(1, 2) + block.pos_embed
    cls_token = normed[:, :1] @ block.token_transform.weight.T + block.token_transform.bias
    # Residual: the un-normalised cls token and 2x2-average-pooled patches, zero-padded 6 -> 10.
    pooled = F.avg_pool2d(x[:, 1:].transpose(1, 2).reshape(2, 6, 4, 4), 2).flatten(2).transpose(1, 2)
    residual = torch.cat([torch.cat([x[:, :1], pooled], dim=1), torch.zeros(2, 5, 4)], dim=2)
    expected = torch.cat([cls_token, patches], dim=1) + residual
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_stem_residual_is_conv1_output() -> None:
    model = small_resnas()
    stem: PatchConvEmbed = model.patch_embed
    x = torch.randn(1, 3, 56, 56)

    def conv_bn_relu(unit, t):
        return F.relu(unit.bn(F.conv2d(t, unit.conv.weight, None, unit.conv.stride, 1)))

    with torch.no_grad():
        c1 = conv_bn_relu(stem.conv1, x)
        feat = c1 + conv_bn_relu(stem.conv3, conv_bn_relu(stem.conv2, c1))
        expected = F.conv2d(feat, stem.conv_proj.weight, stem.conv_proj.bias, stride=7)
        torch.testing.assert_close(stem(x), expected.flatten(2).transpose(1, 2))
    assert stem.conv1.conv.stride == (2, 2) and stem.conv_proj.kernel_size == (7, 7)


def test_bypassed_block_keeps_its_index() -> None:
    model = small_resnas()
    keys = model.state_dict()
    assert isinstance(model.blocks[3], torch.nn.Identity)
    assert not any(k.startswith("blocks.3.") for k in keys)
    assert "blocks.4.pos_embed" in keys and keys["blocks.4.pos_embed"].shape == (1, 1, 32)
    assert model.blocks[0].attn.qkv.weight.shape == (3 * 2 * 8, 16)  # heads * head_dim != width


def test_batchnorm_running_stats_are_used_in_eval() -> None:
    model = small_resnas()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        before = model(x)
        model.patch_embed.conv2.bn.running_mean += 1.0
        after = model(x)
    assert not torch.allclose(before, after, atol=1e-4)


def test_builds_and_runs_without_cuda_in_any_dtype() -> None:
    model = small_resnas().double()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 56, 56, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 10)
    # No stray (non-buffer) tensors: everything the model holds is in its state dict.
    assert not any(isinstance(v, torch.Tensor) for v in vars(model.blocks[1]).values())


def test_batch_size_one_matches_the_batch() -> None:
    model = small_resnas()
    x = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], rtol=1e-4, atol=1e-5)


def test_wrong_input_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="56x56"):
        small_resnas()(torch.randn(1, 3, 64, 64))


def test_inconsistent_network_def_is_rejected() -> None:
    bad = list(SMALL_DEF)
    bad[3] = (1, (20, 3, 8), (20, 48), 1)  # width 20 after a reduction to 24
    with pytest.raises(ValueError, match=r"network_def\[3\]"):
        ViTResNAS(tuple(bad), img_size=56)


def test_num_classes_replaces_the_head_s_class_count() -> None:
    """The config key every family takes (the dataset checks read it) sets the head, as in timm."""
    model = vit_resnas(SMALL_DEF, num_classes=3, img_size=56)
    assert model.num_classes == 3 and model.network_def[-1] == (2, 32, 3)
    assert model(torch.randn(2, 3, 56, 56)).shape == (2, 3)
    assert vit_resnas(SMALL_DEF, img_size=56).network_def == SMALL_DEF
