"""Reaching the cluster: Ray imported on demand, the connection, and the nodes with their labels.

A device joins with the label `vit-deploy/device=<profile>` and one `bench_slot` resource; a group needs the
whole slot, so two groups never time at once on one device.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import DeployError

LABEL = "vit-deploy/device"  # the node label naming its device profile (by default the detected kind)
SLOT = "bench_slot"  # one per device: the resource a group holds while it builds and times
NAMESPACE = "vit-deploy"
# How long the child that asks the head's control store for its id may take, its Ray import included (about 2 s
# alone here, several times that on a loaded 2-core machine); a GCS itself answers in milliseconds.
GCS_TIMEOUT_S = 30.0
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" keeps a head and its driver on loopback
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


def check_reachable(address: str, timeout_s: float = 5.0, given: str | None = None) -> None:
    """One clear line when nothing listens at the head's port (ray.init would retry for minutes).

    `given` is the address the user typed when `address` is the one Ray dials for it instead.
    """
    host, port = _split(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = exc.strerror or exc
        if given is None:
            raise DeployError(f"cannot reach the Ray head at {address} ({why}); is `ray start --head` running "
                              "there, and is its port open to this machine?") from None
        raise DeployError(f"the Ray head answers at {given}, but Ray connects to it as {address} ({why}): it "
                          "swaps a loopback address for this machine's own, where a head started with "
                          f"{LOCAL_ONLY_ENV}=0 does not listen; set {LOCAL_ONLY_ENV}=0 here too (before Ray is "
                          "imported), or start the head on an address its nodes can reach") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _listens_on_loopback_only(port: int) -> bool:
    """Whether every socket listening on `port` here is bound to loopback (False when that cannot be seen)."""
    try:
        import psutil

        bound = [c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except Exception:  # no psutil, or the OS will not list other users' sockets (macOS without root)
        return False
    return bool(bound) and all(ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback for ip in bound)


def _keep_loopback(address: str) -> None:
    """Run this process's Ray in the local-only mode of a head that listens on loopback only.

    Ray in cluster mode (Linux's default) dials a loopback address as this machine's outside address, where
    such a head (started with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) does not listen: ray.init then retried
    (20 tries of about 40 s, a `Failed to connect to GCS` line each). Every node of such a cluster is on this
    machine, so the driver may stay on loopback too. A head that listens on every interface keeps Ray's
    default: its nodes may be elsewhere and must reach the driver at its outside address. Ray reads the
    setting when it is imported, so this comes first.
    """
    host, port = _split(address)
    if "ray" not in sys.modules and LOCAL_ONLY_ENV not in os.environ and _is_loopback(host) \
            and _listens_on_loopback_only(port):
        os.environ[LOCAL_ONLY_ENV] = "0"


def _dialed(address: str) -> str:
    """The address ray.init connects to for `address` (Ray swaps a loopback host for this machine's own)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except Exception:  # a Ray that moved it: its dialled address is the given one as far as we can tell
        return address


_CLUSTER_ID = "import sys, ray._raylet as r; print(r.GcsClient(address=sys.argv[1]).cluster_id.hex())"


def cluster_id(address: str, timeout_s: float = GCS_TIMEOUT_S) -> str:
    """The id of the cluster whose control store (GCS) answers at `address`, within `timeout_s`.

    Asked in a child process: Ray's client retries a port that accepts connections but is no GCS (the
    dashboard's, a stale forward) 20 times for about 40 s each, printing a warning each time, and cannot be
    abandoned half-connected in this one; the child is killed at the deadline and its output kept off the
    terminal. It costs one Ray import (1.7 s here against a live head).
    """
    try:
        done = subprocess.run([sys.executable, "-c", _CLUSTER_ID, address], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"no Ray control store answered at {address} in {timeout_s:.0f} s: is it the head's "
                          "GCS port (the one `ray start --head` prints, 6379 by default)?") from None
    answer = done.stdout.strip().splitlines()
    if done.returncode != 0 or not answer:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no answer"]
        raise DeployError(f"the Ray control store at {address} did not answer: {last[0].strip()[:300]}")
    return answer[-1]


@dataclass(frozen=True)
class Cluster:
    """An open connection to a Ray cluster: what a command passes on instead of connecting again."""

    ray: ModuleType
    address: str  # as the user gave it (messages name it)
    gcs_address: str  # as Ray reports it
    cluster_id: str  # the cluster's identity: the same through any alias, NAT or container address

    def nodes(self) -> list[ClusterNode]:
        return cluster_nodes(self.ray)


def _current(ray: ModuleType, address: str) -> Cluster:
    """The connection this process already holds, if it is to the cluster at `address`; else one error."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # compiled: Ray ships no stub for it

    gcs = ray.get_runtime_context().gcs_address
    current = GcsClient(address=gcs).cluster_id.hex()  # the live control store: it answers at once
    dialed = _dialed(address)
    if dialed != gcs and cluster_id(dialed) != current:
        raise DeployError(f"this process is connected to another Ray cluster (at {gcs}) than the one at {address}")
    return Cluster(ray, address, gcs, current)


@contextmanager
def connected(address: str) -> Iterator[Cluster]:
    """Ray connected to the cluster at `address` for the block; a connection the caller already holds is reused.

    Every step is bounded: nothing listening (at the address given or at the one Ray dials for it) is one
    error line within seconds, a port that is no Ray control store one line within GCS_TIMEOUT_S.
    """
    imported = sys.modules.get("ray")
    if imported is not None and imported.is_initialized():
        yield _current(imported, address)
        return
    check_reachable(address)
    _keep_loopback(address)
    ray = import_ray()
    dialed = _dialed(address)
    if dialed != address:
        check_reachable(dialed, given=address)
    identity = cluster_id(dialed)
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield Cluster(ray, address, ray.get_runtime_context().gcs_address, identity)
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
