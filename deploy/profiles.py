"""Device profiles (what to benchmark on a kind of device) and detecting which device this is.

A profile is a TOML file: the kind of device it needs (`device`), the runtimes, precisions, batch
sizes, threads, timing and default models of a benchmark run, and which device settings to record.
Four ship in `deploy/profiles/` (cpu, cuda, jetson, mac); user-defined ones are found by path, or by
name in `--profiles DIR` and the folders of `$VIT_DEPLOY_PROFILES` (os.pathsep-separated), which
take precedence over the shipped ones.

Detection reads its evidence under a root folder (`/` on a real machine; a test points it at files
it writes): Jetson from `etc/nv_tegra_release` or the device-tree model, Mac from the platform, CUDA
from torch. The device settings recorded (governor, nvpmodel mode, jetson_clocks) are read there too.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeployError
from .export.targets import get_target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

DEVICE_KINDS = ("cpu", "cuda", "jetson", "mac")
# What `--device auto` picks when several kinds apply: the most specific first.
AUTO_ORDER = ("jetson", "mac", "cuda", "cpu")
SHIPPED_DIR = Path(__file__).parent / "profiles"
PROFILES_ENV = "VIT_DEPLOY_PROFILES"
RECORDABLE = ("cpu", "governor", "gpu", "mac", "nvpmodel", "jetson_clocks", "power")

CommandRunner = Callable[[list[str]], "str | None"]


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 1.0
    runs: int = 50
    duration_s: float | None = None  # set: time for this long (at least `min_runs`) instead of `runs`
    min_runs: int = 5
    buffers: int = 4


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    device: str  # the kind of hardware it needs: one of DEVICE_KINDS
    targets: tuple[str, ...]
    precisions: dict[str, tuple[str, ...]]  # target -> precisions, in run order
    batches: tuple[int, ...] = (1,)
    threads: int | None = None  # None: the runtime's default
    models: tuple[str, ...] = ()
    timing: Timing = field(default_factory=Timing)
    record: tuple[str, ...] = ("cpu", "governor")
    description: str = ""
    source: str = ""


# ---------------------------------------------------------------- parsing and lookup

def parse_profile(data: dict[str, Any], source: str = "<dict>") -> DeviceProfile:
    """Validate a profile's TOML table; every problem is one DeployError naming the file."""
    def fail(message: str) -> DeployError:
        return DeployError(f"profile {source}: {message}")

    known = {"name", "device", "description", "targets", "precisions", "batches", "threads", "models",
             "timing", "record"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    device = data.get("device")
    if device not in DEVICE_KINDS:
        raise fail(f"device must be one of {', '.join(DEVICE_KINDS)}, not {device!r}")
    targets = _str_list(data.get("targets"), "targets", fail)
    if not targets:
        raise fail("targets is empty")
    for target in targets:
        try:
            get_target(target)
        except DeployError as exc:
            raise fail(str(exc)) from None
    batches = tuple(data.get("batches", [1]))
    if not batches or not all(isinstance(b, int) and b >= 1 for b in batches):
        raise fail(f"batches must be positive integers, not {batches!r}")
    threads = data.get("threads", 0)
    if not isinstance(threads, int) or threads < 0:
        raise fail(f"threads must be an integer >= 0 (0: the runtime's default), not {threads!r}")
    record = _str_list(data.get("record", ["cpu", "governor"]), "record", fail)
    bad = [r for r in record if r not in RECORDABLE]
    if bad:
        raise fail(f"cannot record {', '.join(bad)} (recordable: {', '.join(RECORDABLE)})")
    return DeviceProfile(
        name=str(data.get("name") or Path(source).stem), device=device, targets=tuple(targets),
        precisions=_precisions(data.get("precisions"), targets, fail), batches=batches, threads=threads or None,
        models=tuple(_str_list(data.get("models", []), "models", fail)), timing=_timing(data.get("timing", {}), fail),
        record=tuple(record), description=str(data.get("description", "")), source=source,
    )


def _str_list(value: Any, key: str, fail) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be a list of strings")
    return value


def _precisions(value: Any, targets: list[str], fail) -> dict[str, tuple[str, ...]]:
    """A list applies to every target (those a target cannot build are dropped); a table is per target."""
    if value is None:
        return {t: (get_target(t).default_precision,) for t in targets}
    if isinstance(value, list):
        chosen = {t: tuple(p for p in value if p in get_target(t).precisions) for t in targets}
        empty = [t for t, p in chosen.items() if not p]
        if empty:
            raise fail(f"no precision in {value} is supported by {', '.join(empty)}")
        return chosen
    if not isinstance(value, dict):
        raise fail("precisions must be a list or a table target -> list")
    extra = sorted(set(value) - set(targets))
    if extra:
        raise fail(f"precisions names target(s) not in targets: {', '.join(extra)}")
    chosen = {}
    for target in targets:
        wanted = value.get(target, [get_target(target).default_precision])
        supported = get_target(target).precisions
        bad = [p for p in wanted if p not in supported]
        if bad:
            raise fail(f"{target} cannot build {', '.join(bad)} (it supports {', '.join(supported)})")
        chosen[target] = tuple(wanted)
    return chosen


def _timing(value: Any, fail) -> Timing:
    if not isinstance(value, dict):
        raise fail("timing must be a table")
    fields = {"warmup_s", "runs", "duration_s", "min_runs", "buffers"}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise fail(f"unknown timing key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    numbers = {k: v for k, v in value.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    if numbers:
        raise fail(f"timing values must be numbers: {', '.join(f'{k}={v!r}' for k, v in numbers.items())}")
    timing = Timing(**value)
    if timing.runs < 1 or timing.buffers < 1 or timing.min_runs < 1 or timing.warmup_s < 0:
        raise fail("timing: runs, min_runs and buffers must be >= 1 and warmup_s >= 0")
    if timing.duration_s is not None and timing.duration_s <= 0:
        raise fail("timing: duration_s must be > 0")
    return timing


def read_profile(path: Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise DeployError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"profile {path} is not valid TOML: {exc}") from None
    return parse_profile(data, str(path))


def search_path(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """Folders searched for a profile name: `--profiles` first, then $VIT_DEPLOY_PROFILES, then shipped."""
    env = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    return [Path(p) for p in extra] + env + [SHIPPED_DIR]


def available_profiles(extra: list[Path] | tuple[Path, ...] = ()) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in search_path(extra):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def load_profile(spec: str, extra: list[Path] | tuple[Path, ...] = ()) -> DeviceProfile:
    """A profile by path (`my.toml`, `dir/x.toml`) or by name in the search path."""
    if spec.endswith(".toml") or os.sep in spec:
        return read_profile(Path(spec))
    profiles = available_profiles(extra)
    if spec not in profiles:
        raise DeployError(f"no device profile {spec!r}; profiles: {', '.join(sorted(profiles))}, auto, "
                          f"or a path to a .toml file")
    return read_profile(profiles[spec])


# ---------------------------------------------------------------- detection

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


_MISSING = {
    "jetson": "this is not a Jetson (no etc/nv_tegra_release, and the device-tree model does not name one)",
    "mac": "this is not a Mac",
    "cuda": "no CUDA GPU here (torch.cuda.is_available() is False)",
}


def require_device(profile: DeviceProfile, detection: Detection) -> None:
    if profile.device not in detection.kinds:
        raise DeployError(f"--device {profile.name} needs a {profile.device} device, but "
                          f"{_MISSING.get(profile.device, 'it is not here')}; this machine is "
                          f"{', '.join(detection.kinds)} (use --device auto)")


def resolve_device(spec: str, detection: Detection, extra: list[Path] | tuple[Path, ...] = ()) -> DeviceProfile:
    """The profile for `--device SPEC` (`auto`: the most specific kind detected), refused if not here."""
    profile = load_profile(detection.best if spec == "auto" else spec, extra)
    require_device(profile, detection)
    return profile


# ---------------------------------------------------------------- settings to record

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


# ---------------------------------------------------------------- power (tegrastats)

# The board's input rail, the best measure of what the whole module draws; older boards name it differently.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VDD_5V_IN")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line: str) -> tuple[float, str] | None:
    """(instantaneous milliwatts, rail) from one tegrastats line: the input rail, else the sum of all rails."""
    rails = {name: float(now) for name, now, _ in _RAIL.findall(line) if name not in ("RAM", "SWAP", "IRAM")}
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    if rails:
        return sum(rails.values()), "sum of " + "+".join(rails)
    return None


class PowerSampler:
    """Runs `tegrastats --interval MS` while open and averages the power it reports.

    Used around the timed runs only, so the figure (and the energy per image derived from it) is
    the board's draw while the engine is busy, not during export or warm-up.
    """

    def __init__(self, command: list[str] | None = None, interval_ms: int = 100):
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[float] = []
        self.rail: str | None = None
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    @staticmethod
    def available(command: list[str] | None = None) -> bool:
        return shutil.which((command or ["tegrastats"])[0]) is not None

    def __enter__(self) -> PowerSampler:
        try:
            self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             text=True, bufsize=1)
        except OSError as exc:
            self.error = f"cannot start {self.command[0]}: {exc}"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            parsed = parse_tegrastats(line)
            if parsed:
                self.samples.append(parsed[0])
                self.rail = parsed[1]

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self, seconds: float, images: int) -> dict[str, Any]:
        """Mean power over the window and the energy per image it implies."""
        if not self.samples:
            return {"mean_w": None, "samples": 0, "error": self.error or "tegrastats printed no power rail"}
        mean_w = sum(self.samples) / len(self.samples) / 1e3
        return {"mean_w": mean_w, "samples": len(self.samples), "rail": self.rail,
                "energy_mj_per_image": mean_w * seconds / max(images, 1) * 1e3}
