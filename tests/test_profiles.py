"""Device profiles: parsing, lookup, detection under a root folder, recorded settings, power sampling."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

import models
from deploy.bench import detect as detection_module
from deploy.bench import device_profiles, power
from deploy.bench.detect import Detection, detect
from deploy.bench.device_profiles import load_profile, parse_profile
from deploy.cli import main
from deploy.errors import DeployError


@pytest.mark.parametrize("name", ["cpu", "cuda", "jetson", "mac"])
def test_shipped_profiles_parse_and_name_real_models(name):
    profile = load_profile(name)
    assert profile.name == name and profile.device == name
    assert profile.targets and set(profile.precisions) == set(profile.targets)
    assert all(models.resolve_name(m) == m for m in profile.models)
    assert profile.timing.runs >= 50 and profile.timing.warmup_s > 0


def test_cpu_profile_content():
    profile = load_profile("cpu")
    assert profile.targets == ("torch", "onnxruntime", "openvino", "executorch")
    assert profile.precisions == {"torch": ("fp32",), "onnxruntime": ("fp32",), "openvino": ("fp32",),
                                  "executorch": ("fp32",)}
    assert profile.batches == (1,) and profile.threads is None
    assert "deit_s" in profile.models and "hvt_s_4" in profile.models


def test_precision_list_drops_what_a_target_cannot_build_and_a_table_is_checked():
    profile = parse_profile({"device": "cpu", "targets": ["torch", "openvino"], "precisions": ["fp32", "int8"]})
    assert profile.precisions == {"torch": ("fp32",), "openvino": ("fp32", "int8")}
    with pytest.raises(DeployError, match="onnxruntime cannot build bf16"):
        parse_profile({"device": "cpu", "targets": ["onnxruntime"], "precisions": {"onnxruntime": ["bf16"]}})


@pytest.mark.parametrize(("data", "message"), [
    ({"device": "gpu", "targets": ["torch"]}, "device must be one of cpu, cuda, jetson, mac"),
    ({"device": "cpu", "targets": []}, "targets is empty"),
    ({"device": "cpu", "targets": ["tensorrtt"]}, "unknown target 'tensorrtt'"),
    ({"device": "cpu", "targets": ["torch"], "batch": [1]}, "unknown key(s) batch"),
    ({"device": "cpu", "targets": ["torch"], "batches": [0]}, "batches must be a list of positive integers"),
    ({"device": "cpu", "targets": ["torch"], "batches": 4}, "batches must be a list of positive integers"),
    ({"device": "cpu", "targets": ["torch"], "threads": True}, "threads must be an integer >= 0"),
    ({"device": "cpu", "targets": ["onnxruntime"], "precisions": {"onnxruntime": "fp32"}},
     "precisions.onnxruntime must be a list of strings, not 'fp32'"),
    ({"device": "cpu", "targets": ["torch"], "record": ["temperature"]}, "cannot record temperature"),
    ({"device": "cpu", "targets": ["torch"], "timing": {"runs": "many"}}, "timing.runs must be an integer, not 'many'"),
    ({"device": "cpu", "targets": ["torch"], "timing": {"runs": 2.5}}, "timing.runs must be an integer, not 2.5"),
    ({"device": "cpu", "targets": ["torch"], "timing": {"warmup_s": float("inf")}},
     "timing.warmup_s must be a finite number, not inf"),
    ({"device": "cpu", "targets": ["torch"], "timing": {"duration_s": 1e6}}, "timing.duration_s must be at most 3600"),
    ({"device": "cpu", "targets": ["torch"], "timing": {"warmup": 1}}, "unknown timing key(s) warmup"),
])
def test_bad_profiles_are_one_clear_error(data, message):
    with pytest.raises(DeployError, match="^profile x.toml: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_profile(data, "x.toml")


def _write_profile(folder, name, body):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_user_profiles_by_path_folder_and_environment(tmp_path, monkeypatch):
    body = """
        device = "cpu"
        targets = ["onnxruntime"]
        batches = [1, 8]
        threads = 1
        models = ["hvt_ti_1"]
        [timing]
        runs = 7
        duration_s = 2.5
        """
    path = _write_profile(tmp_path / "mine", "edge-cpu", body)
    by_path = load_profile(str(path))
    assert (by_path.name, by_path.batches, by_path.threads) == ("edge-cpu", (1, 8), 1)
    assert (by_path.timing.runs, by_path.timing.duration_s) == (7, 2.5)
    assert load_profile("edge-cpu", [tmp_path / "mine"]).source == str(path)
    with pytest.raises(DeployError, match="no device profile 'edge-cpu'; profiles: cpu, cuda, jetson, mac"):
        load_profile("edge-cpu")
    monkeypatch.setenv(device_profiles.PROFILES_ENV, str(tmp_path / "mine"))
    assert load_profile("edge-cpu").batches == (1, 8)
    # A user folder shadows a shipped profile of the same name.
    _write_profile(tmp_path / "mine", "cpu", body)
    assert load_profile("cpu").targets == ("onnxruntime",)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("device = \n")
    with pytest.raises(DeployError, match="bad.toml is not valid TOML"):
        load_profile(str(path))


# ---------------------------------------------------------------- detection


def test_detection_of_a_plain_linux_box(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    found = detect(tmp_path, system="Linux", cuda=False)
    assert found.kinds == ("cpu",) and found.best == "cpu"
    assert found.evidence["cpu"] == "Test CPU 9000"


def test_detection_of_a_jetson_from_nv_tegra_release(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 36191598\n")
    found = detect(tmp_path, system="Linux", cuda=True)
    assert found.kinds == ("jetson", "cuda", "cpu") and found.best == "jetson"
    assert "R36 (release)" in found.evidence["jetson"]


def test_detection_of_a_jetson_from_the_device_tree_model(tmp_path):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert detect(tmp_path, system="Linux", cuda=False).evidence["jetson"] == (
        "device-tree model: NVIDIA Jetson Orin Nano Developer Kit")


def test_a_raspberry_pi_device_tree_is_not_a_jetson(tmp_path):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert detect(tmp_path, system="Linux", cuda=False).kinds == ("cpu",)


def test_detection_of_a_mac_and_of_cuda(tmp_path):
    assert detect(tmp_path, system="Darwin", cuda=False).kinds == ("mac", "cpu")
    assert detect(tmp_path, system="Linux", cuda=True).kinds == ("cuda", "cpu")


def test_asking_for_a_device_that_is_not_here_is_refused(tmp_path):
    cpu_only = Detection(("cpu",), {"cpu": "x"})
    with pytest.raises(DeployError, match="needs a jetson device, but this is not a Jetson.*this machine is cpu"):
        device_profiles.resolve_device("jetson", cpu_only)
    with pytest.raises(DeployError, match="no CUDA GPU here"):
        device_profiles.resolve_device("cuda", cpu_only)
    assert device_profiles.resolve_device("auto", cpu_only).name == "cpu"
    jetson = Detection(("jetson", "cuda", "cpu"), {})
    assert device_profiles.resolve_device("auto", jetson).name == "jetson"
    assert device_profiles.resolve_device("cpu", jetson).name == "cpu", "every machine has a CPU"


@pytest.mark.skipif(detect().kinds != ("cpu",), reason="this machine is not a plain CPU box")
@pytest.mark.parametrize(("device", "message"), [("jetson", "not a Jetson"), ("mac", "not a Mac"),
                                                 ("cuda", "no CUDA GPU here")])
def test_bench_refuses_another_device_in_one_line(device, message, tmp_path, capsys):
    assert main(["bench", "hvt_ti_1", "--device", device, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert err[0].startswith(f"error: --device {device} needs a {device} device")


# ---------------------------------------------------------------- recorded settings


def _jetson_root(tmp_path, pinned: bool):
    root = tmp_path / ("pinned" if pinned else "loose")
    for cpu in ("cpu0", "cpu1"):
        freq = root / "sys/devices/system/cpu" / cpu / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("schedutil\n")
        (freq / "cpuinfo_max_freq").write_text("1728000\n")
        (freq / "scaling_min_freq").write_text("1728000\n" if pinned else "115200\n")
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "max_freq").write_text("1020000000\n")
    (gpu / "min_freq").write_text("1020000000\n")
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    (root / "etc").mkdir()
    (root / "etc/nvpmodel.conf").write_text("< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=2 NAME=15W >\n")
    (root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\n")
    return root


def test_jetson_settings_are_read_under_the_root(tmp_path):
    profile = load_profile("jetson")
    for pinned in (True, False):
        root = _jetson_root(tmp_path, pinned)
        found = detect(root, system="Linux", cuda=True)
        settings = detection_module.device_settings(profile, found, 4, root=root, run=lambda argv: None)
        assert settings["profile"] == "jetson" and settings["detected"]["kinds"][0] == "jetson"
        assert settings["nvpmodel"] == {"id": 2, "name": "15W", "source": "var/lib/nvpmodel/status"}
        assert settings["governor"] == "schedutil"
        assert settings["jetson_clocks"]["on"] is pinned
        assert settings["cpu"]["threads"] == 4
    assert "cpu0" in detection_module.jetson_clocks_state(tmp_path / "loose")["evidence"]


def test_nvpmodel_falls_back_to_the_command_and_unreadable_settings_are_none(tmp_path):
    mode = detection_module.nvpmodel_mode(tmp_path, run=lambda argv: "NV Power Mode: MAXN\n0\n")
    assert mode == {"id": 0, "name": "MAXN", "source": "nvpmodel -q"}
    assert detection_module.nvpmodel_mode(tmp_path, run=lambda argv: None) is None
    assert detection_module.jetson_clocks_state(tmp_path)["on"] is None
    settings = detection_module.device_settings(load_profile("cpu"), detect(tmp_path, "Linux", False), None,
                                                root=tmp_path)
    assert settings["governor"] is None and settings["cpu"]["threads"] >= 1


# ---------------------------------------------------------------- power


@pytest.mark.parametrize(("line", "expected"), [
    ("RAM 2400/7620MB (lfb 4x4MB) SWAP 0/3810MB CPU [2%@729,1%@729] EMC_FREQ 0% GR3D_FREQ 0% "
     "cpu@47.5C VDD_IN 4379mW/4379mW VDD_CPU_GPU_CV 477mW/477mW VDD_SOC 1353mW/1353mW", (4379.0, "VDD_IN")),
    ("RAM 1603/3964MB (lfb 4x4MB) CPU [5%@102,off,off,off] GR3D_FREQ 0% POM_5V_IN 1947/1947 POM_5V_GPU 0/0 "
     "POM_5V_CPU 364/364", (1947.0, "POM_5V_IN")),
    ("RAM 3000/15823MB GPU 310/310 CPU 620/620 SOC 1242/1242 CV 0/0 VDDRQ 155/155 SYS5V 1415/1415",
     (3742.0, "sum of GPU+CPU+SOC+CV+VDDRQ+SYS5V")),
    ("RAM 2400/7620MB SWAP 0/3810MB CPU [2%@729]", None),
])
def test_parse_tegrastats(line, expected):
    assert power.parse_tegrastats(line) == expected


def test_power_sampler_averages_a_tegrastats_stream(tmp_path):
    script = tmp_path / "fake_tegrastats.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        for watts in [4000, 6000] * 200:
            print(f"RAM 1/2MB VDD_IN {watts}mW/{watts}mW VDD_SOC 900mW/900mW", flush=True)
            time.sleep(0.005)
        """))
    with power.PowerSampler([sys.executable, str(script)]) as sampler:
        deadline = time.time() + 10
        while len(sampler.samples) < 20 and time.time() < deadline:
            time.sleep(0.01)
    summary = sampler.summary(seconds=2.0, images=100)
    assert summary.samples >= 20 and summary.rail == "VDD_IN"
    assert 4.0 <= summary.mean_w <= 6.0
    assert summary.energy_mj_per_image == pytest.approx(summary.mean_w * 2.0 / 100 * 1e3)


def test_power_sampler_without_tegrastats_reports_why(tmp_path):
    with power.PowerSampler([str(tmp_path / "no-such-tegrastats")]) as sampler:
        pass
    summary = sampler.summary(1.0, 10)
    assert summary.mean_w is None and "cannot start" in summary.error
