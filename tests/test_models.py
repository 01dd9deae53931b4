"""HVT and DeiT: counts against the reference, structure, registry behaviour."""

from __future__ import annotations

import pytest
import torch

import models
from models.complexity import count_macs, count_params, meta_model
from models.hvt import HVT, pooled_length

# docs/models.md, HVT: computed parameter counts (M) and README FLOPs (= ptflops MACs, G).
HVT_REFERENCE = {
    "hvt_ti_1": (5.736, 0.64, [196, 97]),
    "hvt_s_0": (22.050, 4.57, [196]),
    "hvt_s_1": (22.087, 2.40, [196, 97]),
    "hvt_s_2": (22.106, 1.94, [196, 97, 48]),
    "hvt_s_3": (22.114, 1.62, [196, 97, 48, 23]),
    "hvt_s_4": (22.119, 1.39, [196, 97, 48, 23, 11]),
}


@pytest.mark.parametrize("name", sorted(HVT_REFERENCE))
def test_hvt_counts_match_reference(name):
    params_m, macs_g, tokens = HVT_REFERENCE[name]
    model = meta_model(name)
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=1e-3)
    assert count_macs(model, (3, 224, 224)) / 1e9 == pytest.approx(macs_g, rel=0.01)
    assert model.token_counts == tokens


@pytest.mark.parametrize("info", models.list_models(), ids=lambda i: i.name)
def test_registry_counts_are_the_live_counts(info):
    """`list` shows stored figures; they must be what the model really has."""
    model = meta_model(info.name)
    assert count_params(model) / 1e6 == pytest.approx(info.params_m, abs=6e-4)
    assert count_macs(model, info.input_size) / 1e9 == pytest.approx(info.macs_g, rel=2e-3)


def test_deit_counts():
    assert count_params(meta_model("deit_s")) == 22_050_664
    assert count_params(meta_model("deit_ti")) == 5_717_416


def test_aliases_resolve():
    assert models.resolve_name("hvt_s") == "hvt_s_1"
    assert models.resolve_name("hvt_ti") == "hvt_ti_1"
    assert models.resolve_name("scale_hvt_ti_4") == "hvt_s_4"
    assert models.resolve_name("HVT-S-4") == "hvt_s_4"


def test_unknown_model_suggests_close_names():
    with pytest.raises(models.UnknownModelError, match="did you mean.*hvt_s"):
        models.resolve_name("hvt_s_9")


def test_hvt_pooling_blocks_and_pos_embeds_follow_the_official_layout():
    model = meta_model("hvt_s_4")
    pooling = [i for i, b in enumerate(model.blocks) if b.downsample is not None]
    assert pooling == [0, 3, 6, 9]
    keys = {k for k in model.state_dict() if k.endswith("pos_embed")}
    assert keys == {"pos_embed", "blocks.0.pos_embed", "blocks.3.pos_embed", "blocks.6.pos_embed",
                    "blocks.9.pos_embed"}
    assert model.blocks[9].pos_embed.shape == (1, 11, 384)
    assert "cls_token" not in model.state_dict()


def test_hvt_s_0_has_no_pooling():
    model = meta_model("hvt_s_0")
    assert all(b.downsample is None for b in model.blocks)


def test_hvt_pools_the_flat_sequence_across_rows():
    """The pool window slides over raster order, so it mixes the last patch of a row with the next row."""
    model = HVT(img_size=32, patch_size=8, embed_dim=8, depth=1, num_heads=1, pool_block_width=1,
                num_classes=0).eval()
    tokens = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1).expand(1, 16, 8).clone()
    pooled = model.blocks[0].downsample(tokens.transpose(1, 2)).transpose(1, 2)
    # windows [0,1,2], [2,3,4], [4,5,6], ...: the second spans row 0 (2,3) and row 1 (4)
    assert pooled[0, :, 0].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    assert pooled_length(16, 3, 2) == 7


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes(tiny_hvt, batch):
    with torch.no_grad():
        assert tiny_hvt(torch.randn(batch, 3, 64, 64)).shape == (batch, 10)


def test_wrong_input_size_is_a_clear_error(tiny_hvt):
    with pytest.raises(ValueError, match="takes 64x64"):
        tiny_hvt(torch.randn(1, 3, 60, 60))


def test_forward_features_and_head_compose(tiny_hvt):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tiny_hvt.forward_head(tiny_hvt.forward_features(x)), tiny_hvt(x))
