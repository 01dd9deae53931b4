"""CvT: counts against the reference, the official checkpoint layout, and the official numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomise_batchnorm

from models import CheckpointError, create_model, get_model_info
from models.complexity import count_macs, count_params, meta_model
from models.cvt import CvT, QuickGELU

# A small CvT with the real structure (3 stages, cls token in stage 2) for fast numerics at 64x64.
SMALL = {"embed_dims": (16, 32, 48), "depths": (1, 1, 2), "num_heads": (1, 2, 3), "num_classes": 10}


def small_cvt(seed: int = 0) -> CvT:
    torch.manual_seed(seed)
    return randomise_batchnorm(CvT(**SMALL), seed)


# --- counts -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "target_m"),
    [("cvt_13", 19.997), ("cvt_13_384", 19.997), ("cvt_21", 31.62), ("cvt_21_384", 31.62),
     ("cvt_w24", 277.2)],
)
def test_param_count_matches_reference(name: str, target_m: float) -> None:
    params_m = count_params(meta_model(name)) / 1e6
    assert params_m == pytest.approx(target_m, rel=1e-3)
    assert get_model_info(name).params_m == pytest.approx(params_m, abs=1e-3)


@pytest.mark.parametrize(("name", "target_g"), [("cvt_13", 4.5), ("cvt_21", 7.1)])
def test_macs_at_224_match_readme(name: str, target_g: float) -> None:
    macs_g = count_macs(meta_model(name), (3, 224, 224)) / 1e9
    assert macs_g == pytest.approx(target_g, rel=0.03)


@pytest.mark.parametrize("name", ["cvt_13", "cvt_13_384", "cvt_21", "cvt_21_384", "cvt_w24"])
def test_registered_macs_are_the_live_count(name: str) -> None:
    info = get_model_info(name)
    macs_g = count_macs(meta_model(name), info.input_size) / 1e9
    assert info.macs_g == pytest.approx(macs_g, abs=1e-3)
    # The README figures (MACs, called GFLOPs) at the variant's own resolution.
    assert macs_g == pytest.approx(info.published_macs_g, rel=0.03)


def test_preprocessing_follows_the_official_eval() -> None:
    for name in ("cvt_13", "cvt_21"):
        info = get_model_info(name)
        assert (info.input_size, info.crop_pct, info.interpolation) == ((3, 224, 224), 0.875, "bicubic")
    for name in ("cvt_13_384", "cvt_21_384", "cvt_w24"):
        info = get_model_info(name)
        assert (info.input_size, info.crop_pct, info.interpolation) == ((3, 384, 384), 1.0, "bicubic")
    assert get_model_info("cvt_13").published_top1 == 81.6
    assert get_model_info("cvt_w24").published_top1 == 87.6


# --- official checkpoint layout -----------------------------------------------------------------

def official_cvt_state_dict(dims: tuple[int, ...], depths: tuple[int, ...], num_classes: int = 1000,
                            mlp_ratio: int = 4) -> dict[str, torch.Tensor]:
    """The key names and shapes documented for microsoft/CvT checkpoints (docs/models.md, CvT)."""
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, *shape: int) -> None:
        sd[key] = torch.randn(*shape) * 0.02

    prev = 3
    for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        kernel = (7, 3, 3)[i]
        put(f"stage{i}.patch_embed.proj.weight", dim, prev, kernel, kernel)
        put(f"stage{i}.patch_embed.proj.bias", dim)
        put(f"stage{i}.patch_embed.norm.weight", dim)
        put(f"stage{i}.patch_embed.norm.bias", dim)
        if i == len(dims) - 1:
            put(f"stage{i}.cls_token", 1, 1, dim)
        for j in range(depth):
            block = f"stage{i}.blocks.{j}."
            for part in "qkv":
                put(block + f"attn.conv_proj_{part}.conv.weight", dim, 1, 3, 3)
                for stat in ("weight", "bias", "running_mean"):
                    put(block + f"attn.conv_proj_{part}.bn.{stat}", dim)
                sd[block + f"attn.conv_proj_{part}.bn.running_var"] = torch.rand(dim) + 0.5
                sd[block + f"attn.conv_proj_{part}.bn.num_batches_tracked"] = torch.tensor(1000)
                put(block + f"attn.proj_{part}.weight", dim, dim)
                put(block + f"attn.proj_{part}.bias", dim)
            put(block + "attn.proj.weight", dim, dim)
            put(block + "attn.proj.bias", dim)
            for norm in ("norm1", "norm2"):
                put(block + f"{norm}.weight", dim)
                put(block + f"{norm}.bias", dim)
            put(block + "mlp.fc1.weight", mlp_ratio * dim, dim)
            put(block + "mlp.fc1.bias", mlp_ratio * dim)
            put(block + "mlp.fc2.weight", dim, mlp_ratio * dim)
            put(block + "mlp.fc2.bias", dim)
        prev = dim
    put("norm.weight", dims[-1])
    put("norm.bias", dims[-1])
    put("head.weight", num_classes, dims[-1])
    put("head.bias", num_classes)
    return sd


@pytest.fixture(scope="module")
def cvt13_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(13)
    state_dict = official_cvt_state_dict((64, 192, 384), (1, 2, 10))
    path = tmp_path_factory.mktemp("cvt") / "CvT-13-224x224-IN-1k.pth"
    torch.save(state_dict, path)  # the official files are a bare state dict
    return str(path), state_dict


def test_documented_layout_has_the_reference_parameter_count(cvt13_checkpoint) -> None:
    _, state_dict = cvt13_checkpoint
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(v.numel() for k, v in state_dict.items() if not k.endswith(buffers))
    assert params / 1e6 == pytest.approx(19.997, rel=1e-3)


def test_official_cvt13_checkpoint_loads_strictly(cvt13_checkpoint) -> None:
    path, state_dict = cvt13_checkpoint
    model = create_model("cvt_13", weights=path)
    assert model.weights_info.container_key is None
    assert model.weights_info.num_tensors == len(state_dict)
    loaded = model.state_dict()
    for key in ("stage2.cls_token", "stage1.blocks.1.attn.conv_proj_k.bn.running_var", "head.bias"):
        torch.testing.assert_close(loaded[key], state_dict[key])


def test_a_wrong_key_fails_naming_it(cvt13_checkpoint, tmp_path) -> None:
    _, state_dict = cvt13_checkpoint
    broken = dict(state_dict)
    broken["stage2.blocks.3.attn.proj_query.weight"] = broken.pop("stage2.blocks.3.attn.proj_q.weight")
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as excinfo:
        create_model("cvt_13", weights=path)
    message = str(excinfo.value)
    assert "stage2.blocks.3.attn.proj_q.weight" in message
    assert "stage2.blocks.3.attn.proj_query.weight" in message


# --- numerics -----------------------------------------------------------------------------------

def reference_attention(attn: torch.nn.Module, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The official forward, op by op: cls split, dw conv + BN (eval), cls re-attached, scale dim**-0.5."""
    cls_token, tokens = x[:, :1], x[:, 1:]
    grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def conv_bn(proj: torch.nn.Module) -> torch.Tensor:
        y = F.conv2d(grid, proj.conv.weight, None, proj.conv.stride, 1, 1, grid.shape[1])
        bn = proj.bn
        y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
        return torch.cat([cls_token, y.flatten(2).transpose(1, 2)], dim=1)

    dim, heads = attn.dim, attn.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, dim // heads).permute(0, 2, 1, 3)

    q = split(attn.proj_q(conv_bn(attn.conv_proj_q)))
    k = split(attn.proj_k(conv_bn(attn.conv_proj_k)))
    v = split(attn.proj_v(conv_bn(attn.conv_proj_v)))
    scores = torch.softmax((q @ k.transpose(-2, -1)) * dim**-0.5, dim=-1)
    out = (scores @ v).permute(0, 2, 1, 3).reshape(x.shape[0], -1, dim)
    return attn.proj(out)


def test_attention_matches_the_official_formula() -> None:
    model = small_cvt()
    attn = model.stage2.blocks[1].attn
    assert attn.scale == pytest.approx(48**-0.5)  # the stage width, not head_dim (16)
    h = w = 4
    x = torch.randn(2, 1 + h * w, 48)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, h, w), reference_attention(attn, x, h, w))
    # k and v are reduced (stride 2), q is not.
    assert attn.conv_proj_q.conv.stride == (1, 1)
    assert attn.conv_proj_k.conv.stride == attn.conv_proj_v.conv.stride == (2, 2)


def test_quick_gelu_is_used() -> None:
    model = small_cvt()
    assert isinstance(model.stage0.blocks[0].mlp.act, QuickGELU)
    x = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    assert not torch.allclose(QuickGELU()(x), F.gelu(x))


def test_batch_size_one_works_and_matches_the_batch() -> None:
    model = small_cvt()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        batch = model(x)
        single = model(x[:1])
    assert single.shape == (1, 10)
    torch.testing.assert_close(single, batch[:1], rtol=1e-4, atol=1e-5)


def test_batchnorm_running_stats_are_used_in_eval() -> None:
    model = small_cvt()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        # On v: a constant shift of every key would mostly cancel in the softmax.
        model.stage1.blocks[0].attn.conv_proj_v.bn.running_mean += 1.0
        after = model(x)
    assert not torch.allclose(before, after, atol=1e-4)


def test_the_cls_token_only_lives_in_the_last_stage() -> None:
    keys = set(meta_model("cvt_13").state_dict())
    assert "stage2.cls_token" in keys
    assert not any(k.startswith(("stage0.cls_token", "stage1.cls_token")) for k in keys)
    assert not any("pos_embed" in k for k in keys)


def test_any_input_size_runs() -> None:
    # No position embedding: the 224 weights run at 384 and vice versa (odd grids included).
    model = small_cvt()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 72, 72))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
