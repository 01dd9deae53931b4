"""`RayExecutor`: the harness's groups run on the cluster's devices, each on a node of its device label.

One `NodeBench` actor is placed on every node of each requested label (it holds the node's one
`bench_slot`, so two groups never time at once on a device, and all its CPUs, so no other Ray work runs
beside the timing). Each free actor takes the next group of its
label that its node can run (the node's own doctor answer decides; a group no node of the label can run
goes to any of them and comes back `unavailable`, as it would locally). Rows are handed to `finished` as
each group returns, so the driver writes the results file after every cell as a local run does. A node
that leaves mid-run turns its group into failed cells ("node lost"); when a label has no node left, its
remaining groups fail the same way and the rest of the matrix goes on. Ctrl-C kills the actors, which
stops the remote work and frees the slots; the results file holds every finished cell, ready for --resume.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from ..bench.device_profiles import DeviceProfile
from ..bench.group import planned_row, run_group
from ..bench.plan import BenchRequest, Group
from ..bench.results import ResultRow
from ..bench.run import Finished, GroupRunner
from ..errors import DeployError
from ..export.artifacts import artifact_dir
from .connect import LABEL, SLOT, Cluster, ClusterNode, bench_nodes
from .node import NodeBench, NodeReport, NodeSetup, node_folder, package_version, unpack_archive


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RayExecutor:
    """Run the groups on an open `cluster` connection; `profiles` maps each device label to its profile."""

    cluster: Cluster
    profiles: Mapping[str, DeviceProfile]
    fetch_artifacts: bool = False
    run_group: GroupRunner = run_group
    place_timeout_s: float = 120.0  # how long a node may take to start its actor (imports, runtime probes)
    notice: Callable[[str], None] = field(default=_to_stderr)  # nodes that could not serve

    def run(self, groups: Sequence[Group], request: BenchRequest, started: Callable[[Group], None],
            finished: Finished) -> None:
        if any(g.device is None for g in groups):
            raise DeployError("a cluster run plans each device's matrix apart (BenchRequest.devices)")
        devices = sorted({g.device for g in groups if g.device is not None})
        if not devices:
            return
        ray = self.cluster.ray
        nodes = bench_nodes(self.cluster.nodes(), devices, self.cluster.address)
        with self._placed(ray, request, nodes) as slots:
            _Dispatch(ray, slots, request, self.fetch_artifacts, started, finished).run(groups)

    @contextmanager
    def _placed(self, ray: ModuleType, request: BenchRequest,
                nodes: dict[str, list[ClusterNode]]) -> Iterator[list[_Slot]]:
        """An actor on every node of each label, ready; all of them killed when the block ends (Ctrl-C too)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        weights = _weights(ray, request)
        actor_class = ray.remote(NodeBench)
        pending: dict[Any, tuple[Any, str]] = {}
        for device, members in nodes.items():
            setup = NodeSetup(device=device, profile=self.profiles[device], settings=request.settings,
                              out=str(request.out), targets=_targets(request, device), run_group=self.run_group,
                              weights_name=Path(request.settings.weights).name if request.settings.weights else None)
            for node in members:
                # The whole node: its slot, and all its CPUs, so no other Ray work competes with the timing (and Ray
                # sets OMP_NUM_THREADS to all of them, not to the 1 it forces on an actor that holds none).
                pinned = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                actor = actor_class.options(label_selector={LABEL: device}, scheduling_strategy=pinned,
                                            resources={SLOT: 1}, num_cpus=node.cpus, max_restarts=0,
                                            max_task_retries=0).remote(setup, weights)
                pending[actor.describe.remote()] = (actor, device)
        try:
            slots = _ready_slots(ray, pending, self.place_timeout_s, self.notice)
            yield slots
            ray.wait([slot.actor.close.remote() for slot in slots], num_returns=len(slots), timeout=30)
        finally:
            for actor, _ in pending.values():  # also on Ctrl-C: stops the remote work and frees the slots
                ray.kill(actor, no_restart=True)


@dataclass
class _Slot:
    """A placed actor: its node's report and the label it serves."""

    actor: Any
    device: str
    report: NodeReport


def _weights(ray: ModuleType, request: BenchRequest) -> Any:
    """The checkpoint's bytes in the object store (each node fetches them once), or None."""
    if not request.settings.weights:
        return None
    try:
        return ray.put(Path(request.settings.weights).read_bytes())
    except OSError as exc:
        raise DeployError(f"cannot read --weights {request.settings.weights}: {exc.strerror or exc}") from None


def _targets(request: BenchRequest, device: str) -> tuple[str, ...]:
    return tuple(t for matrix in request.matrices() if matrix.device == device for t in matrix.targets)


def _ready_slots(ray: ModuleType, pending: dict[Any, tuple[Any, str]], timeout_s: float,
                 notice: Callable[[str], None]) -> list[_Slot]:
    """The actors that started, with their nodes' reports; a label none of whose nodes started is an error."""
    ready, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    slots, problems, foreign = [], [], []
    for ref in ready:
        actor, device = pending[ref]
        try:
            report = ray.get(ref)
        except ray.exceptions.RayError as exc:
            problems.append(f"a {device} node could not start its bench actor: {_first_line(exc)}")
            continue
        if report.versions["vit-deploy"] != package_version():
            foreign.append(f"{report.record.host} ({device}) runs vit-deploy {report.versions['vit-deploy']}")
        slots.append(_Slot(actor, device, report))
    if foreign:  # the driver and its nodes exchange the harness's own types: one version everywhere
        raise DeployError(f"this driver runs vit-deploy {package_version()} but {'; '.join(foreign)}: install the "
                          "same version on every node")
    if waiting:
        problems.append(f"{len(waiting)} node(s) did not start in {timeout_s:.0f} s (another run holds their "
                        f"{SLOT}, or they are still starting)")
    unserved = sorted({device for _, device in pending.values()} - {s.device for s in slots})
    if unserved:
        raise DeployError(f"no node of device {', '.join(unserved)} could run: {'; '.join(problems)}")
    for problem in problems:  # the other nodes of those labels carry the run
        notice(f"note: {problem}")
    return slots


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]  # Ray's own text ends with the cause


@dataclass
class _Dispatch:
    """The driver's loop: free slots take groups of their label; results are handed on as they arrive."""

    ray: ModuleType
    slots: list[_Slot]
    request: BenchRequest
    fetch: bool
    started: Callable[[Group], None]
    finished: Finished
    queues: dict[str, deque[Group]] = field(default_factory=dict)
    running: dict[Any, tuple[_Slot, Group]] = field(default_factory=dict)

    def run(self, groups: Sequence[Group]) -> None:
        for group in groups:
            self.queues.setdefault(str(group.device), deque()).append(group)
        while True:
            self._hand_out()
            if not self.running:
                break
            [ref], _ = self.ray.wait(list(self.running), num_returns=1)
            slot, group = self.running.pop(ref)
            try:
                rows, archive = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                self._lost(slot, group, exc)
                continue
            except self.ray.exceptions.RayError as exc:  # the group's own call failed (it never raises by design)
                rows, archive = self._failed(group, slot, f"remote error: {_first_line(exc)}"), None
            self._hand_out()  # the node's next group first: the device works while the driver writes the file
            if archive is not None:
                self._unpack(slot, group, archive)
            self.finished(rows)

    def _hand_out(self) -> None:
        busy = {id(slot) for slot, _ in self.running.values()}
        for slot in self.slots:
            if id(slot) in busy:
                continue
            group = self._next_for(slot)
            if group is None:
                continue
            self.started(group)
            self.running[slot.actor.run.remote(group, self.fetch)] = (slot, group)

    def _next_for(self, slot: _Slot) -> Group | None:
        """The first queued group of the slot's label its node can run, else one no node of the label can run."""
        queue = self.queues.get(slot.device)
        if not queue:
            return None
        peers = [s for s in self.slots if s.device == slot.device]
        for group in queue:
            if slot.report.can_run(group.target) or not any(p.report.can_run(group.target) for p in peers):
                queue.remove(group)
                return group
        return None

    def _lost(self, slot: _Slot, group: Group, exc: BaseException) -> None:
        self.slots.remove(slot)
        host = slot.report.record.host
        self.finished(self._failed(group, slot, f"node lost: {host} ({slot.device}) left the cluster mid-run "
                                                f"({_first_line(exc)})"))
        if any(s.device == slot.device for s in self.slots):
            return
        queue = self.queues.pop(slot.device, deque())
        for waiting in queue:  # no node of this label is left: its remaining cells cannot run
            self.finished(self._failed(waiting, slot, f"node lost: no {slot.device} node left in the cluster "
                                                      f"(the last, {host}, left mid-run)"))

    def _failed(self, group: Group, slot: _Slot, error: str) -> list[ResultRow]:
        return [replace(planned_row(group, batch), status="failed", weights=self.request.settings.weights,
                        error=error, device=group.device, node=slot.report.record) for batch in group.batches]

    def _unpack(self, slot: _Slot, group: Group, archive: bytes) -> None:
        root = Path(self.request.out) / node_folder(slot.device, slot.report.record.host)
        unpack_archive(archive, artifact_dir(root, group.model, group.target, group.precision))
