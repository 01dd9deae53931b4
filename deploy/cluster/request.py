"""A cluster run's plan: a profile per device label, its matrix, and one timing every device is measured with.

A node's label names a device profile (by default the kind detection finds: cpu, cuda, jetson, mac; or a
profile of your own, such as `orin-int8`), so `--device NAME` sends that profile's matrix to the nodes
labelled NAME. Every device of one run is timed with the same settings, so that one results file holds
one `settings`: each timing field is the most demanding of the profiles' (the longest warm-up, the most
runs, the longest duration), which gives every device at least what its own profile asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bench.device_profiles import DeviceProfile, load_profile
from ..bench.plan import DeviceMatrix
from ..errors import DeployError
from ..timing import TimingSettings


def cluster_profiles(specs: Sequence[str], labels: Sequence[str],
                     extra: Sequence[Path] = ()) -> dict[str, DeviceProfile]:
    """Device label -> profile, for the profiles named (none named: every label the cluster has)."""
    if "auto" in specs:
        raise DeployError("--device auto means this machine's kind; with --cluster name the devices to run on "
                          f"(this cluster has: {', '.join(labels) or 'no labelled node'})")
    chosen = list(specs) or list(labels)
    if not chosen:
        raise DeployError("the cluster has no device node yet (join one with `python -m deploy worker --address ...`)")
    profiles: dict[str, DeviceProfile] = {}
    for spec in chosen:
        profile = load_profile(spec, list(extra))
        if profile.name in profiles:
            raise DeployError(f"--device {spec}: profile {profile.name!r} is named twice")
        profiles[profile.name] = profile
    return profiles


@dataclass(frozen=True)
class Overrides:
    """What the command line sets for every device, over each profile's own."""

    models: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()
    precision: str | None = None


def device_matrices(profiles: Mapping[str, DeviceProfile], overrides: Overrides) -> tuple[DeviceMatrix, ...]:
    matrices = []
    for label, profile in profiles.items():
        names = overrides.models or profile.models
        if not names:
            raise DeployError(f"profile {label} names no models: give MODEL names")
        matrices.append(DeviceMatrix(device=label, models=tuple(names), targets=overrides.targets or profile.targets,
                                     batches=overrides.batches or profile.batches, precision=overrides.precision,
                                     precisions=None if overrides.targets else profile.precisions))
    return tuple(matrices)


def shared_timing(profiles: Sequence[DeviceProfile]) -> TimingSettings:
    """The most demanding of the profiles' timings: every device gets at least its own profile's."""
    timings = [p.timing for p in profiles]
    durations = [t.duration_s for t in timings if t.duration_s is not None]
    return TimingSettings(warmup_s=max(t.warmup_s for t in timings),
                          min_warmup_runs=max(t.min_warmup_runs for t in timings),
                          runs=max(t.runs for t in timings), duration_s=max(durations) if durations else None,
                          min_runs=max(t.min_runs for t in timings), buffers=max(t.buffers for t in timings))


def shared_threads(profiles: Sequence[DeviceProfile]) -> int | None:
    threads = {p.threads for p in profiles}
    if len(threads) > 1:
        detail = ", ".join(f"{p.name}: {p.threads or 'default'}" for p in profiles)
        raise DeployError(f"the profiles pin different thread counts ({detail}); give --threads for every device")
    return threads.pop()
