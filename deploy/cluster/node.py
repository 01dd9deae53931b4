"""What runs on each device: one `NodeBench` actor holding the node's bench slot, running the groups it is sent.

The driver sends each node, once, a `NodeSetup` (the device's profile, the run's settings, the artifact
folder) and the checkpoint's bytes through Ray's object store; the node then exports, checks and times
each group it is given with the harness's own `run_group`, exactly as a local run does, keeps the engine
in its own artifact folder and hands back the rows tagged with a `NodeRecord`.
"""

from __future__ import annotations

import io
import platform
import re
import shutil
import socket
import tarfile
import tempfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from ..bench.accuracy import References
from ..bench.detect import Detection, detect, device_settings
from ..bench.device_profiles import DeviceProfile, require_device
from ..bench.group import GroupContext, planned_row
from ..bench.plan import Group
from ..bench.results import NodeRecord, ResultRow
from ..bench.run import GroupRunner
from ..bench.settings import BenchSettings
from ..errors import DeployError
from ..export.artifacts import artifact_dir
from ..export.onnx_cache import OnnxCache
from .connect import import_ray

WORK_PREFIX = ".bench-onnx-"


@dataclass(frozen=True)
class NodeSetup:
    """What the driver sends each node once."""

    device: str  # the node's label: the profile its cells were planned with
    profile: DeviceProfile
    settings: BenchSettings
    out: str  # the artifact root on the node (relative: to the folder the node was started in)
    targets: tuple[str, ...]  # the runtimes this device's matrix uses: the node says which of them it can run
    run_group: GroupRunner
    weights_name: str | None = None  # the checkpoint's file name, when one travels


@dataclass(frozen=True)
class RuntimeState:
    """One runtime as the node's own doctor sees it."""

    target: str
    installed: bool
    version: str | None
    can_build: bool
    can_run: bool
    reason: str = ""


@dataclass(frozen=True)
class NodeReport:
    """A node's answer: where it is, what it detects itself to be, its versions and runtimes."""

    record: NodeRecord
    detected: tuple[str, ...]  # the device kinds detection finds here, most specific first
    versions: dict[str, str]  # python, vit-deploy, ray
    runtimes: tuple[RuntimeState, ...]

    def can_run(self, target: str) -> bool:
        return any(r.target == target and r.can_run for r in self.runtimes)


def package_version() -> str:
    try:
        return metadata.version("vit-deploy")
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def node_report(targets: tuple[str, ...] | None = None, profile: DeviceProfile | None = None,
                threads: int | None = None) -> NodeReport:
    """This node's report: every runtime (`doctor`), or only `targets` (a run probes what it will use)."""
    import runtimes
    from runtimes.doctor import probe

    ray = import_ray()
    context = ray.get_runtime_context()
    detection = detect()
    labels = {k: v for k, v in context.get_node_labels().items() if not k.startswith("ray.io/")}
    device = device_settings(profile, detection, threads)
    record = NodeRecord(node_id=context.get_node_id(), host=socket.gethostname(), labels=labels, device=device)
    states = []
    for name in targets if targets is not None else tuple(runtimes.target_names()):
        _, status = probe(name)
        states.append(RuntimeState(name, status.available, status.version, status.can_build, status.can_run,
                                   status.reason))
    versions = {"python": platform.python_version(), "vit-deploy": package_version(), "ray": ray.__version__}
    return NodeReport(record, detection.kinds, versions, tuple(states))


def node_folder(device: str, host: str) -> str:
    """The node's own folder under the artifact root: nodes that share a file system never share a folder."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", f"{device}@{host}")


class NodeBench:
    """One per node (it holds the node's whole bench slot): builds and times the groups it is sent, one at a time."""

    def __init__(self, setup: NodeSetup, weights: bytes | None = None) -> None:
        self.setup = setup
        self.report = node_report(setup.targets, setup.profile, setup.settings.threads)
        self.mislabelled = _mislabelled(setup, self.report)
        self.folder = Path(setup.out).expanduser() / node_folder(setup.device, self.report.record.host)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(WORK_PREFIX + "*"):  # a killed run's: this actor holds the node's only slot
            shutil.rmtree(stale, ignore_errors=True)
        settings = self._local_settings(setup, weights)
        self.work = Path(tempfile.mkdtemp(dir=self.folder, prefix=WORK_PREFIX))
        references = References(settings.dataset, settings.dataset_limit) if settings.dataset else None
        self.context = GroupContext(settings, self.folder, OnnxCache(self.work), references)

    def _local_settings(self, setup: NodeSetup, weights: bytes | None) -> BenchSettings:
        from ..bench.power import PowerSampler

        settings = replace(setup.settings, power=setup.settings.power and "power" in setup.profile.record
                           and PowerSampler.available())
        if weights is None:
            return settings
        path = self.folder / ".weights" / (setup.weights_name or "checkpoint.pth")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(weights)
        return replace(settings, weights=str(path))

    def describe(self) -> NodeReport:
        return self.report

    def run(self, group: Group, fetch: bool = False) -> tuple[list[ResultRow], bytes | None]:
        """The group's rows, tagged with this node (and the engine folder as a tar archive when `fetch`)."""
        if self.mislabelled:
            rows = [replace(planned_row(group, b), status="failed", error=self.mislabelled) for b in group.batches]
        else:
            rows = self.setup.run_group(group, self.context)
        tagged = [replace(row, weights=self.setup.settings.weights or row.weights, device=group.device,
                          node=self.report.record) for row in rows]
        exported = any(row.parity is not None for row in rows)  # this run built it (not an older run's folder)
        return tagged, (self._archive(group) if fetch and exported else None)

    def _archive(self, group: Group) -> bytes | None:
        folder = artifact_dir(self.folder, group.model, group.target, group.precision)
        if not folder.is_dir():
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(folder, arcname=".")
        return buffer.getvalue()

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _mislabelled(setup: NodeSetup, report: NodeReport) -> str | None:
    """Why this node cannot stand for its label's profile (a hand-written `ray start --labels` can be wrong)."""
    try:
        require_device(setup.profile, Detection(report.detected, {}))
    except DeployError as exc:
        return f"node {report.record.host} is labelled {setup.device}, but: {exc}"
    return None


def unpack_archive(data: bytes, destination: Path) -> Path:
    """A fetched engine folder, extracted beside `destination` and renamed into place (never half-written)."""
    from ..export.artifacts import promote, staging

    with staging(destination) as stage, tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(stage, filter="data")  # refuses absolute paths, '..' and links out of the folder
        return promote(stage, destination)
