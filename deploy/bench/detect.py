"""Which device this is, and the device settings a benchmark records.

Detection reads its evidence under a root folder (`/` on a real machine; a test points it at files it
writes): a Jetson from `etc/nv_tegra_release` or the device-tree model, a Mac from the platform, CUDA
from torch. The settings recorded (governor, nvpmodel mode, jetson_clocks) are read there too; one that
cannot be read is None, never fatal.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .device_profiles import DeviceProfile

DEVICE_KINDS = ("cpu", "cuda", "jetson", "mac")
# What `--device auto` picks when several kinds apply: the most specific first.
AUTO_ORDER = ("jetson", "mac", "cuda", "cpu")

CommandRunner = Callable[[list[str]], "str | None"]


@dataclass(frozen=True)
class Detection:
    kinds: tuple[str, ...]  # every kind this machine is, in AUTO_ORDER (always ends with "cpu")
    evidence: dict[str, str]

    @property
    def best(self) -> str:
        return self.kinds[0]

    def to_json(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "evidence": dict(self.evidence)}


def detect(root: Path = Path("/"), system: str | None = None, cuda: bool | None = None) -> Detection:
    """What this machine is. `system` defaults to platform.system(), `cuda` to torch.cuda.is_available()."""
    root = Path(root)
    evidence: dict[str, str] = {}
    jetson = jetson_evidence(root)
    if jetson:
        evidence["jetson"] = jetson
    system = system or platform.system()
    if system == "Darwin":
        evidence["mac"] = f"platform {system} {platform.mac_ver()[0] or ''}".strip()
    if cuda is None:
        cuda, why = _torch_cuda()
    else:
        why = "given"
    if cuda:
        evidence["cuda"] = why
    evidence["cpu"] = cpu_model(root)
    kinds = tuple(k for k in AUTO_ORDER if k in evidence)
    return Detection(kinds, evidence)


def jetson_evidence(root: Path) -> str | None:
    release = root / "etc" / "nv_tegra_release"
    text = _read(release)
    if text:
        return f"{release.relative_to(root)}: {text.splitlines()[0].strip()[:80]}"
    model = device_tree_model(root)
    if model and re.search(r"jetson|tegra|nvidia", model, re.IGNORECASE):
        return f"device-tree model: {model}"
    return None


def device_tree_model(root: Path) -> str | None:
    for path in (root / "proc" / "device-tree" / "model", root / "sys" / "firmware" / "devicetree" / "base" / "model"):
        text = _read(path)
        if text:
            return text.replace("\x00", "").strip()
    return None


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, f"torch.cuda: {torch.cuda.get_device_name(0)}"
        return False, "torch.cuda.is_available() is False"
    except Exception as exc:  # a broken CUDA install must not stop a CPU run
        return False, f"torch.cuda failed: {exc}"


def run_command(argv: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a short command, or None if it is missing or fails (settings are best-effort)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def device_settings(profile: DeviceProfile | None, detection: Detection, threads: int | None,
                    root: Path = Path("/"), run: CommandRunner = run_command) -> dict[str, Any]:
    """The settings the profile asks to record (no profile: the CPU's); an unreadable one is None, never fatal."""
    root = Path(root)
    record = profile.record if profile else ("cpu", "governor")
    settings: dict[str, Any] = {"profile": profile.name if profile else None,
                                "device": profile.device if profile else detection.best,
                                "profile_source": profile.source if profile else None,
                                "detected": detection.to_json()}
    if "cpu" in record:
        settings["cpu"] = {"model": cpu_model(root, run), "cores": os.cpu_count(),
                           "cores_usable": _usable_cores(), "threads": threads or _default_threads()}
    if "governor" in record:
        settings["governor"] = _read_stripped(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if "gpu" in record:
        settings["gpu"] = gpu_info()
    if "mac" in record:
        settings["mac"] = {"macos": platform.mac_ver()[0] or None, "chip": cpu_model(root, run)}
    if "nvpmodel" in record:
        settings["nvpmodel"] = nvpmodel_mode(root, run)
    if "jetson_clocks" in record:
        settings["jetson_clocks"] = jetson_clocks_state(root)
    return settings


def cpu_model(root: Path = Path("/"), run: CommandRunner = run_command) -> str:
    text = _read(Path(root) / "proc" / "cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    if platform.system() == "Darwin":
        brand = run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand.strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()


def gpu_info() -> dict[str, Any] | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_mb": round(props.total_memory / 2**20), "cuda": torch.version.cuda}
    except Exception as exc:  # recording must not fail the run
        return {"error": str(exc)}


def nvpmodel_mode(root: Path = Path("/"), run: CommandRunner = run_command) -> dict[str, Any] | None:
    """The power mode: JetPack's status file and nvpmodel.conf, else `nvpmodel -q`."""
    status = _read(Path(root) / "var/lib/nvpmodel/status")
    match = re.search(r"pmode:(\d+)", status or "")
    if match:
        mode = int(match.group(1))
        names = dict(re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>",
                                _read(Path(root) / "etc/nvpmodel.conf") or ""))
        return {"id": mode, "name": names.get(str(mode)), "source": "var/lib/nvpmodel/status"}
    output = run(["nvpmodel", "-q"])
    match = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", output or "")
    if match:
        return {"id": int(match.group(2)), "name": match.group(1), "source": "nvpmodel -q"}
    return None


_GPU_DEVFREQ = re.compile(r"gpu|ga10b|gv11b|gp10b|gm20b", re.IGNORECASE)


def jetson_clocks_state(root: Path = Path("/")) -> dict[str, Any]:
    """Whether clocks are pinned: jetson_clocks sets each CPU's and the GPU's minimum frequency to its maximum.

    (`jetson_clocks --show` says it directly but needs root.) None when no frequency file is readable.
    """
    root = Path(root)
    pinned: dict[str, bool] = {}
    for cpufreq in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        low, high = _read_int(cpufreq / "scaling_min_freq"), _read_int(cpufreq / "cpuinfo_max_freq")
        if low is not None and high is not None:
            pinned[cpufreq.parent.name] = low >= high
    for devfreq in sorted((root / "sys/class/devfreq").glob("*")):
        if _GPU_DEVFREQ.search(devfreq.name):
            low, high = _read_int(devfreq / "min_freq"), _read_int(devfreq / "max_freq")
            if low is not None and high is not None:
                pinned[f"gpu:{devfreq.name}"] = low >= high
    if not pinned:
        return {"on": None, "evidence": "no readable cpufreq/devfreq minimum and maximum"}
    loose = [name for name, ok in pinned.items() if not ok]
    return {"on": not loose, "evidence": (f"min < max on {', '.join(loose[:4])}" if loose
                                          else f"min = max on {len(pinned)} clock(s)")}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _read_stripped(path: Path) -> str | None:
    text = _read(path)
    return text.strip() if text else None


def _read_int(path: Path) -> int | None:
    text = _read_stripped(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


