"""`python -m deploy doctor --cluster ADDRESS`: every node, its labels, what it detects itself to be, its runtimes.

Each node answers for itself (a small task pinned to it runs the same probes as `doctor` there), so
what the list says a node can build and run is what a benchmark there will find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..bench.device_profiles import load_profile
from ..errors import DeployError
from .connect import LABEL, SLOT, ClusterNode, connected
from .node import NodeReport, node_report


@dataclass(frozen=True)
class NodeAnswer:
    node: ClusterNode
    report: NodeReport | None = None
    error: str | None = None  # why the node did not answer
    label_check: str | None = None  # whether its label's profile is a kind of device it detects itself to be


def cluster_doctor(address: str, profiles: Sequence[Path] = (), timeout_s: float = 120.0) -> list[NodeAnswer]:
    """Every live node's answer; one that has not answered `timeout_s` after the probes went out says so.

    A probe imports every runtime (Core ML's and ExecuTorch's imports took 22 and 13 s here, on 2 cores), and
    nodes that share a machine share its cores: three test nodes on 2 cores beside three busy processes had
    not answered after 300 s.
    """
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise DeployError(f"--timeout {timeout_s:g}: give a number of seconds above 0")
    with connected(address) as cluster:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = cluster.ray
        nodes = cluster.nodes()
        probe = ray.remote(num_cpus=0, max_retries=0)(node_report)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(): n
                for n in nodes}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        answers = []
        for ref, node in refs.items():
            if ref not in ready:
                ray.cancel(ref, force=True)
                answers.append(NodeAnswer(node, error=f"no answer in {timeout_s:.0f} s (a slow or busy node: give "
                                                      "--timeout)"))
                continue
            try:
                report = ray.get(ref)
            except ray.exceptions.RayError as exc:
                answers.append(NodeAnswer(node, error=f"cannot run vit-deploy there: {_last_line(exc)}"))
                continue
            answers.append(NodeAnswer(node, report, label_check=_label_check(node, report, profiles)))
    return answers


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _label_check(node: ClusterNode, report: NodeReport, profiles: Sequence[Path]) -> str:
    if not node.device:
        return f"no {LABEL} label: not a bench device (the head, or a node joined by hand)"
    try:
        profile = load_profile(node.device, list(profiles))
    except DeployError:
        return f"no profile {node.device!r} on this driver (give --device-profiles DIR)"
    if profile.device not in report.detected:
        detected = ", ".join(report.detected)
        return f"WRONG: profile {profile.name} needs a {profile.device} device, the node detects {detected}"
    return f"ok: profile {profile.name} ({profile.device}), {SLOT} {node.slots:g}"


def answers_json(answers: list[NodeAnswer]) -> list[dict[str, Any]]:
    return [asdict(a) for a in answers]


def format_answers(answers: list[NodeAnswer]) -> str:
    lines = []
    for a in answers:
        node = a.node
        labels = ", ".join(f"{k}={v}" for k, v in node.labels.items()) or "no labels"
        lines.append(f"node {node.node_id[:12]}  {node.host} ({node.address})  {labels}")
        if a.report is None:
            lines.append(f"  {a.error}")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in a.report.versions.items())
        lines.append(f"  detected: {', '.join(a.report.detected)}; {versions}")
        lines.append(f"  label: {a.label_check}")
        for r in a.report.runtimes:
            state = ("ready" if r.can_run else "build only") if r.installed else "missing"
            why = f"  ({r.reason})" if r.reason and not r.can_run else ""
            lines.append(f"  {r.target:<12} {state:<10} {r.version or '-':<14} "
                         f"build={'yes' if r.can_build else 'no':<3} run={'yes' if r.can_run else 'no'}{why}")
    return "\n".join(lines)
