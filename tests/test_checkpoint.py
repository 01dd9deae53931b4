"""Official checkpoints: containers unwrapped, keys strict, unsafe pickles refused."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

import models
from models.checkpoint import read_checkpoint


class NotAllowed:
    pass


def official_hvt_s_2_state_dict() -> dict[str, torch.Tensor]:
    """Built from docs/models.md's key names and shapes, not from our model."""
    dim, hidden = 384, 1536
    state = {
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16),
        "patch_embed.proj.bias": torch.randn(dim),
        "pos_embed": torch.randn(1, 196, dim),
        "norm.weight": torch.randn(dim), "norm.bias": torch.randn(dim),
        "head.weight": torch.randn(1000, dim), "head.bias": torch.randn(1000),
        "blocks.0.pos_embed": torch.randn(1, 97, dim),
        "blocks.6.pos_embed": torch.randn(1, 48, dim),
    }
    for i in range(12):
        for name, shape in {
            "norm1": (dim,), "norm2": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim),
            "mlp.fc1": (hidden, dim), "mlp.fc2": (dim, hidden),
        }.items():
            state[f"blocks.{i}.{name}.weight"] = torch.randn(shape)
            state[f"blocks.{i}.{name}.bias"] = torch.randn(shape[0])
    return state


def deit_container(state) -> dict:
    """What HVT's main.py saves: DeiT's training container with a pickled argparse.Namespace."""
    return {"model": state, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {"last_epoch": 3},
            "epoch": 299, "scaler": {"scale": 65536.0},
            "args": argparse.Namespace(model="hvt_model", pool_block_width=6, lr=5e-4, input_size=224)}


def test_official_layout_loads_strictly(tmp_path):
    state = official_hvt_s_2_state_dict()
    path = tmp_path / "hvt_s_2.pth"
    torch.save(deit_container(state), path)
    model = models.create_model("hvt_s_2", weights=path)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert model.weights_info.container_key == "model"
    assert len(model.weights_info.sha256) == 64


def test_bare_state_dict_loads(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(official_hvt_s_2_state_dict(), path)
    assert models.create_model("hvt_s_2", weights=path).weights_info.container_key is None


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("blocks.6.pos_embed"), "missing keys: blocks.6.pos_embed"),
    (lambda s: s.__setitem__("blocks.3.pos_embed", torch.zeros(1, 48, 384)), "unexpected keys: blocks.3.pos_embed"),
    (lambda s: s.__setitem__("head.weight", torch.zeros(10, 384)), r"mis-shaped keys: head.weight \(10, 384\)"),
])
def test_mismatched_checkpoint_names_the_keys(tmp_path, edit, message):
    state = official_hvt_s_2_state_dict()
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(models.CheckpointError, match=message):
        models.create_model("hvt_s_2", weights=path)


def test_wrong_variant_is_refused(tmp_path):
    path = tmp_path / "s2.pth"
    torch.save({"model": official_hvt_s_2_state_dict()}, path)
    with pytest.raises(models.CheckpointError, match="missing keys: blocks.4.pos_embed"):
        models.create_model("hvt_s_3", weights=path)


def test_foreign_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": official_hvt_s_2_state_dict(), "extra": NotAllowed()}, path)
    with pytest.raises(models.CheckpointError, match="pickles .*NotAllowed.*refusing to unpickle"):
        read_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps([1, 2, 3])[:5]])
def test_corrupt_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(models.CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": official_hvt_s_2_state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(models.CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(path)


def test_container_without_weights(tmp_path):
    path = tmp_path / "opt.pth"
    torch.save({"optimizer": {"lr": 1.0}, "epoch": 3}, path)
    with pytest.raises(models.CheckpointError, match="without model weights"):
        models.create_model("hvt_s_2", weights=path)


def test_ddp_prefix_is_stripped(tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official_hvt_s_2_state_dict().items()}}, path)
    models.create_model("hvt_s_2", weights=path)
