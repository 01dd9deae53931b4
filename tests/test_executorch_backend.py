"""ExecuTorch adapter on a small HVT: XNNPACK lowering, batch plans, precisions, the Core ML delegate, profiling."""

from __future__ import annotations

import numpy as np
import pytest

from runtimes import (
    BuildOptions,
    EngineLoadError,
    InputMismatchError,
    ModelSource,
    RuntimeAdapterError,
    RuntimeUnavailableError,
    TensorSpec,
    get_backend,
)
from runtimes.executorch_backend import ExecuTorchOptions, batch_plan

pytestmark = pytest.mark.executorch

torch = pytest.importorskip("torch", reason="torch is needed to build the reference model")

SPEC = TensorSpec("input", ("batch", 3, 32, 32))
# The ops that carry the work: XNNPACK must take every one of them.
COMPUTE_OPS = ("aten.linear.default", "aten.bmm.default", "aten.convolution.default", "aten.max_pool2d.default",
               "aten._softmax.default", "aten.mean.dim")


def test_batch_plan_is_static_for_one_batch_dynamic_or_enumerated_for_several():
    assert batch_plan((1,), "auto").methods == {"forward": 1} and batch_plan((1,), "auto").mode == "static"
    dynamic = batch_plan((4, 1, 4), "auto")
    assert dynamic.dynamic and dynamic.methods == {"forward": 4} and dynamic.mode == "dynamic"
    enumerated = batch_plan((8, 1, 4), "enumerated")
    assert enumerated.methods == {"forward": 1, "batch_4": 4, "batch_8": 8} and not enumerated.dynamic
    with pytest.raises(RuntimeAdapterError, match="positive ints"):
        batch_plan((0,), "auto")


def test_options_are_checked_before_any_work():
    backend = get_backend("executorch")
    parsed = backend.parse_options({"delegate": "coreml", "etrecord": "true"})
    assert parsed == ExecuTorchOptions("coreml", etrecord=True)
    with pytest.raises(RuntimeAdapterError, match="delegate 'qnn' is not one of xnnpack, coreml"):
        backend.parse_options({"delegate": "qnn"})
    with pytest.raises(RuntimeAdapterError, match="batch_shapes 'dynamic' is not one of auto, enumerated"):
        ExecuTorchOptions(batch_shapes="dynamic")


def test_the_issue_benchmark_profile_puts_executorch_next_to_onnxruntime():
    from pathlib import Path

    from deploy.bench.device_profiles import load_profile

    path = Path(__file__).parents[1] / "scripts" / "profiles" / "executorch_vs_onnxruntime.toml"
    profile = load_profile(str(path))
    assert profile.precisions == {"onnxruntime": ("fp32",), "executorch": ("fp32", "int8")}
    assert profile.batches == (1,) and profile.threads == 2
    assert profile.models == ("hvt_s_1", "deit_s", "cvt_13", "vit_resnas_tiny")


@pytest.fixture(scope="module")
def model():
    """One HVT block with token pooling: every op kind of the zoo's HVTs, lowered in a few seconds."""
    from models.hvt import HVT

    torch.manual_seed(0)
    return HVT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, pool_block_width=1,
               num_classes=10).eval()


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("executorch", reason="the executorch extra is not installed: pip install -e .[executorch]")
    return get_backend("executorch")


@pytest.fixture(scope="module")
def built(backend, model, tmp_path_factory):
    """Builds keyed by (precision, batches, options), lowered once per module."""
    cache = {}

    def build(precision: str = "fp32", batch=(1,), **options):
        key = (precision, tuple(batch), tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"executorch_{precision}")
            build_options = BuildOptions(precision=precision, batch=batch, runtime=ExecuTorchOptions(**options))
            result = backend.build(ModelSource([SPEC], ["logits"], module=model), out, build_options)
            cache[key] = (out, result, build_options)
        return cache[key]

    return build


def run(backend, built_entry, x: np.ndarray) -> np.ndarray:
    out, result, options = built_entry
    with backend.load(out, result.files[0], options) as runner:
        return runner.infer({"input": x})["logits"]


def reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def scaled_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def batch_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_availability_runs_xnnpack_here(backend):
    status = backend.availability()
    assert status.available and status.can_build and status.can_run, status.reason
    assert status.version.startswith("1.") and status.devices == ("cpu",)


@pytest.fixture(scope="module")
def enumerated(built):
    """Static methods at batch 1 (`forward`) and 4 (`batch_4`): the fully delegated form."""
    return built("fp32", (1, 4), batch_shapes="enumerated")


@pytest.mark.slow
def test_static_methods_match_pytorch_and_xnnpack_takes_the_compute(backend, enumerated, model):
    out, result, _ = enumerated
    assert result.files == ("model.pte",) and result.batches == (1, 4)
    assert result.details["batch_mode"] == "enumerated" and result.can_run_here
    assert result.details["methods"] == {"forward": 1, "batch_4": 4}
    for n in (1, 4):
        x = batch_of(n, seed=n)
        assert scaled_error(run(backend, enumerated, x), reference(model, x)) < 1e-5
    for method in ("forward", "batch_4"):
        counts = result.details["delegation"][method]
        assert counts["backend"] == "XnnpackBackend"
        assert all(counts["delegated_ops"].get(op) for op in COMPUTE_OPS), counts["delegated_ops"]
        # Only LayerNorm (2 in the block, 1 before the head) stays on the portable kernels: ExecuTorch 1.5's
        # XNNPACK has none.
        assert counts["portable_ops"] == {"aten.native_layer_norm.default": 3}


def test_etrecord_needs_a_single_method_program(backend, model, tmp_path):
    options = BuildOptions(batch=(1, 4), runtime=ExecuTorchOptions(batch_shapes="enumerated", etrecord=True))
    with pytest.raises(RuntimeAdapterError, match="etrecord needs a program with one method"):
        backend.build(ModelSource([SPEC], ["logits"], module=model), tmp_path, options)


@pytest.mark.slow
def test_static_methods_refuse_other_batches(backend, enumerated):
    with pytest.raises(InputMismatchError, match="batch 2 is not one this program serves"):
        run(backend, enumerated, batch_of(2))
    with pytest.raises(InputMismatchError, match="batch 8 is not one this program serves"):
        run(backend, enumerated, batch_of(8))


@pytest.mark.slow
def test_dynamic_batch_serves_every_batch_up_to_the_largest(backend, built, model):
    entry = built("fp32", (1, 4), etrecord=True)
    _, result, _ = entry
    assert result.batches is None and result.details["batch_mode"] == "dynamic"
    assert result.files == ("model.pte", "etrecord.bin")
    assert result.details["views_with_inferred_batch"] > 0
    for n in (1, 3, 4):
        x = batch_of(n, seed=n)
        assert scaled_error(run(backend, entry, x), reference(model, x)) < 1e-5
    with pytest.raises(InputMismatchError, match="batch 5 is not one this program serves"):
        run(backend, entry, batch_of(5))
    forward = result.details["delegation"]["forward"]
    assert all(forward["delegated_ops"].get(op) for op in COMPUTE_OPS)
    # XNNPACK takes no slice of a dynamic tensor: the q/k/v split stays portable.
    assert forward["portable_ops"] == {"aten.native_layer_norm.default": 3, "aten.slice_copy.Tensor": 3}


@pytest.mark.slow
def test_enumerated_methods_share_their_weights(enumerated, built):
    out, _, _ = enumerated
    dynamic = built("fp32", (1, 4), etrecord=True)[0]
    assert (out / "model.pte").stat().st_size < 1.5 * (dynamic / "model.pte").stat().st_size


@pytest.mark.slow
def test_fp16_runs_in_half_precision_with_fp32_io(backend, built, model):
    entry = built("fp16", (1,))
    _, result, _ = entry
    assert result.details["compute"].startswith("fp16")
    x = batch_of(1, seed=7)
    ours, theirs = run(backend, entry, x), reference(model, x)
    assert ours.dtype == np.float32
    assert 1e-5 < scaled_error(ours, theirs) < 2e-2, "fp16 rounding shows, within the fp16 tolerance"


def test_int8_needs_calibration(backend, model, tmp_path):
    with pytest.raises(RuntimeAdapterError, match="int8 needs calibration data"):
        backend.build(ModelSource([SPEC], ["logits"], module=model), tmp_path, BuildOptions(precision="int8"))


@pytest.mark.slow
def test_coreml_delegate_builds_here_and_says_why_it_cannot_run(backend, built):
    out, result, options = built("fp32", (1,), delegate="coreml")
    delegation = result.details["delegation"]["forward"]
    assert delegation["backend"] == "CoreMLBackend" and delegation["subgraphs"] >= 1
    assert delegation["delegated_ops"].get("aten.linear.default")
    assert result.can_run_here is False and "Core ML delegate" in result.run_reason
    with pytest.raises(RuntimeUnavailableError, match="CoreMLBackend|delegates"):
        backend.load(out, result.files[0], options).activate()


def test_corrupt_program_is_one_clear_error(backend, tmp_path):
    (tmp_path / "model.pte").write_bytes(b"not a program")
    with pytest.raises(EngineLoadError, match="cannot load .* as an ExecuTorch program"):
        backend.load(tmp_path, "model.pte", BuildOptions()).activate()


@pytest.mark.slow
def test_profile_hook_times_every_op_and_attributes_portable_ones_to_modules(built):
    from runtimes.executorch_profile import ETDumpRequest, profile_ops

    out, _, _ = built("fp32", (1, 4), etrecord=True)
    ops = profile_ops(ETDumpRequest(out / "model.pte", batch_of(1), runs=3, etrecord=out / "etrecord.bin"))
    assert all(len(op.times_ms) == 3 and min(op.times_ms) >= 0 for op in ops)
    xnnpack = [op for op in ops if op.delegate == "XnnpackBackend"]
    assert any(op.name.startswith("Fully Connected") for op in xnnpack)
    portable = [op for op in ops if op.delegate is None]
    assert sorted(op.name for op in portable) == 3 * ["native_call_native_layer_norm.out"] + 3 * [
        "native_call_slice_copy.Tensor_out"], "the dynamic program's portable ops: LayerNorms and q/k/v slices"
    norms = [op for op in portable if "layer_norm" in op.name]
    modules = [path[-1] for op in norms for path in op.module_hierarchy.values()]
    assert modules == ["L__self__blocks.0.norm1", "L__self__blocks.0.norm2", "L__self__norm"]


@pytest.mark.slow
def test_runner_profile_layers_reports_etdump_ops_outside_the_timed_program(backend, built):
    """`bench --profile` / `deploy profile` reach ExecuTorch through Runner.profile_layers: a second, traced load."""
    from runtimes.profiling import ProfileRequest

    entry = built("fp32", (1, 4))
    out, result, options = entry
    with backend.load(out, result.files[0], options) as runner:
        assert runner.profiling_unavailable() is None
        profile = runner.profile_layers(ProfileRequest([{"input": batch_of(1)}], runs=3, warmup=1))
        after = runner.infer({"input": batch_of(1)})["logits"]
    assert profile.runtime == "executorch" and profile.runs == 3
    assert {n.kernel for n in profile.nodes} == {"delegate", "portable"}
    assert any(n.op_type.startswith("Fully Connected") for n in profile.nodes if n.kernel == "delegate")
    assert sorted(n.op_type for n in profile.nodes if n.kernel == "portable") == [
        "native_layer_norm.out"] * 3 + ["slice_copy.Tensor_out"] * 3
    assert profile.total_ms == pytest.approx(profile.node_ms) and profile.total_ms > 0
    np.testing.assert_array_equal(after, run(backend, entry, batch_of(1)))
