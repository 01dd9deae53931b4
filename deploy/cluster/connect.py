"""Reaching the cluster: Ray imported on demand, the connection, and the nodes with their labels.

A device joins with the label `vit-deploy/device=<profile>` and one `bench_slot` resource; a group needs the
whole slot, so two groups never time at once on one device.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import DeployError

LABEL = "vit-deploy/device"  # the node label naming its device profile (by default the detected kind)
SLOT = "bench_slot"  # one per device: the resource a group holds while it builds and times
NAMESPACE = "vit-deploy"
INSTALL = "pip install -e .[cluster] (the same vit-deploy and Ray on the driver and on every node)"


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise DeployError(f"--cluster needs Ray: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class ClusterNode:
    """A live node as the cluster's control store lists it."""

    node_id: str
    host: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    slots: float = 0.0
    cpus: float = 0.0

    @property
    def device(self) -> str | None:
        return self.labels.get(LABEL)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeployError(f"--cluster {address!r}: give the head's HOST:PORT (ray start --head prints it)")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One clear line when nothing listens at the head's port (ray.init would retry for minutes)."""
    host, port = _split(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise DeployError(f"cannot reach the Ray head at {address} ({exc.strerror or exc}); is `ray start --head` "
                          "running there, and is its port open to this machine?") from None


def _same_address(a: str, b: str) -> bool:
    (host_a, port_a), (host_b, port_b) = _split(a), _split(b)
    if port_a != port_b:
        return False
    try:
        return host_a == host_b or socket.gethostbyname(host_a) == socket.gethostbyname(host_b)
    except OSError:
        return False


@contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Ray connected to the cluster at `address` for the block; a connection the caller already holds is reused."""
    ray = import_ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if not _same_address(current, address):
            raise DeployError(f"this process is connected to the Ray cluster at {current}, not {address}")
        yield ray
        return
    check_reachable(address)
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_nodes(ray: ModuleType) -> list[ClusterNode]:
    """The live nodes, with their user labels (Ray's own `ray.io/` labels left out)."""
    return [ClusterNode(node_id=n["NodeID"], host=n.get("NodeManagerHostname") or n["NodeManagerAddress"],
                        address=n["NodeManagerAddress"],
                        labels={k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")},
                        slots=float(n.get("Resources", {}).get(SLOT, 0.0)),
                        cpus=float(n.get("Resources", {}).get("CPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def bench_nodes(nodes: list[ClusterNode], devices: list[str], address: str) -> dict[str, list[ClusterNode]]:
    """The nodes of each requested device label; a label no node has is one error naming those the cluster has."""
    found: dict[str, list[ClusterNode]] = {}
    for node in nodes:
        if node.device and node.slots >= 1:
            found.setdefault(node.device, []).append(node)
    missing = [d for d in devices if d not in found]
    if missing:
        have = ", ".join(f"{d} ({len(n)} node{'s' * (len(n) > 1)})" for d, n in sorted(found.items())) or "none"
        raise DeployError(f"no node of device {', '.join(missing)} in the cluster at {address}; its devices: {have} "
                          f"(a device joins with `python -m deploy worker --address {address}`)")
    return {d: found[d] for d in devices}
