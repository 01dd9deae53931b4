from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# The suite is a gate, so by default each property test checks the same examples on every run (derandomize
# seeds them from the test itself); HYPOTHESIS_PROFILE=explore searches fresh examples each run.
settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))

# Under pytest-xdist each worker shares the machine's cores with the others: torch's own thread pool (the PyTorch
# references, and the default `--threads` that bench detects from it) takes one core per worker instead of all of
# them, so two workers on two cores do not run four spinning threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_hvt():
    """A small HVT (3 pooling stages) that exports in about a second."""
    from models.hvt import HVT

    return HVT(img_size=64, patch_size=8, embed_dim=32, depth=6, num_heads=2, pool_block_width=2,
               num_classes=10).eval()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """`graphs(model)`: one ONNX cache per model for a test module, so that its exports of one model share the clean
    export as a bench run's cells do (the export is about half of a digits cell's time here); each export still
    rewrites, builds, calibrates and gates its own engine."""
    from deploy.export.onnx_cache import OnnxCache

    caches: dict[str, OnnxCache] = {}

    def cache(model: str) -> OnnxCache:
        if model not in caches:
            caches[model] = OnnxCache(tmp_path_factory.mktemp(f"graphs-{model}"))
        return caches[model]

    return cache
