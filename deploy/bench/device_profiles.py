"""Device profiles: what to benchmark on a kind of device, as TOML files.

A profile names the kind of device it needs (`device`), the runtimes, precisions, batch sizes, threads,
timing and default models of a benchmark run, and which device settings to record. Four ship in
`deploy/bench/profiles/` (cpu, cuda, jetson, mac); user-defined ones are found by path, or by name in
`--device-profiles DIR` and the folders of `$VIT_DEPLOY_PROFILES` (os.pathsep-separated), which take precedence
over the shipped ones. `resolve_device` also refuses a profile whose device this machine is not
(`deploy.bench.detect`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import DeployError, validation_problem
from ..export.targets import get_target
from ..timing import TimingSettings
from .detect import DEVICE_KINDS, Detection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

SHIPPED_DIR = Path(__file__).parent / "profiles"
PROFILES_ENV = "VIT_DEPLOY_PROFILES"
RECORDABLE = ("cpu", "governor", "gpu", "mac", "nvpmodel", "jetson_clocks", "power")
Fail = Callable[[str], DeployError]


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    device: str  # the kind of hardware it needs: one of DEVICE_KINDS
    targets: tuple[str, ...]
    precisions: dict[str, tuple[str, ...]]  # target -> precisions, in run order
    batches: tuple[int, ...] = (1,)
    threads: int | None = None  # None: the runtime's default
    models: tuple[str, ...] = ()
    timing: TimingSettings = field(default_factory=TimingSettings)
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
    batches = data.get("batches", [1])
    if not isinstance(batches, list) or not batches or not all(_integer(b) and b >= 1 for b in batches):
        raise fail(f"batches must be a list of positive integers, such as [1, 4], not {batches!r}")
    threads = data.get("threads", 0)
    if not _integer(threads) or threads < 0:
        raise fail(f"threads must be an integer >= 0 (0: the runtime's default), not {threads!r}")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise fail(f"{key} must be a string, not {data[key]!r}")
    record = _str_list(data.get("record", ["cpu", "governor"]), "record", fail)
    bad = [r for r in record if r not in RECORDABLE]
    if bad:
        raise fail(f"cannot record {', '.join(bad)} (recordable: {', '.join(RECORDABLE)})")
    return DeviceProfile(
        name=str(data.get("name") or Path(source).stem), device=device, targets=tuple(targets),
        precisions=_precisions(data.get("precisions"), targets, fail), batches=tuple(batches), threads=threads or None,
        models=tuple(_str_list(data.get("models", []), "models", fail)), timing=_timing(data.get("timing", {}), fail),
        record=tuple(record), description=str(data.get("description", "")), source=source,
    )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML's `true` is not a count


def _str_list(value: Any, key: str, fail: Fail) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be a list of strings, not {value!r}")
    return value


def _precisions(value: Any, targets: list[str], fail: Fail) -> dict[str, tuple[str, ...]]:
    """A list applies to every target (those a target cannot build are dropped); a table is per target."""
    if value is None:
        return {t: (get_target(t).default_precision,) for t in targets}
    if isinstance(value, list):
        value = _str_list(value, "precisions", fail)
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
        wanted = _str_list(value.get(target, [get_target(target).default_precision]), f"precisions.{target}", fail)
        supported = get_target(target).precisions
        bad = [p for p in wanted if p not in supported]
        if bad:
            raise fail(f"{target} cannot build {', '.join(bad)} (it supports {', '.join(supported)})")
        chosen[target] = tuple(wanted)
    return chosen


def _timing(value: Any, fail: Fail) -> TimingSettings:
    """The `[timing]` table, each value checked by `TimingSettings` itself (type, range, finite)."""
    if not isinstance(value, dict):
        raise fail("timing must be a table")
    fields = {"warmup_s", "runs", "duration_s", "min_runs", "buffers"}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise fail(f"unknown timing key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    try:
        return TimingSettings(**value)
    except ValidationError as exc:
        where, what = validation_problem(exc)
        raise fail(f"timing.{'.'.join(map(str, where))} {what}") from None


def read_profile(path: Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DeployError(f"profile {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"profile {path} is not valid TOML: {exc}") from None
    return parse_profile(data, str(path))


def search_path(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """Folders searched for a profile name: `--device-profiles` first, then $VIT_DEPLOY_PROFILES, then shipped."""
    missing = [str(p) for p in extra if not Path(p).is_dir()]
    if missing:
        raise DeployError(f"--device-profiles {missing[0]} is not a folder (it should hold device profile .toml files)")
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
