"""Where an engine's time goes: a per-layer profile through its runtime's own profiler, attributed to modules.

`profile_runner` asks a loaded runner for a `RuntimeProfile` (`Runner.profile_layers`: a separate
profiling engine, so the runner's timed session stays unprofiled), maps every runtime node to the ONNX
nodes it ran and those to module groups (`attribution`), counts each group's MACs with
`FlopCounterMode` (`models.complexity.macs_by_module`), and hands on a `LayerProfile`: per part, per
unit, per runtime op type and the slowest nodes, each with its share of the profiled latency next to
its share of the MACs. `python -m deploy profile ARTIFACT_DIR` and `bench --profile` use it.

Shares are of the profiled inference's wall time, so they add up to the nodes' coverage of it; what the
nodes do not cover (the runtime's dispatch and copies between nodes) is reported as `(outside nodes)`,
and a coverage outside 90-110 % gets a note saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx

import models
from runtimes import NodeTime, ProfileRequest, Runner, RuntimeProfile, SourceNode
from runtimes.profiling import ProfilingUnavailableError

from ..errors import DeployError
from ..export.manifest import Manifest
from ..export.node_map import MODULE_MACS, NodeInfo, node_table, read_module_macs, read_node_map
from ..export.stage import load_artifact
from ..fileio import write_json_atomic
from ..timing import TimingSettings, input_feeds
from .attribution import ABSORBABLE, OTHER, PARTS, Group, classify_macs, classify_nodes, runtime_group
from .records import PROFILE, LayerProfile, NodeShare, Share

COVERAGE_TOLERANCE = 0.10  # shares must add up to the profiled wall time within this, or a note says why


@dataclass(frozen=True)
class ProfileSettings:
    batch: int = 1
    runs: int = 20
    warmup: int = 5
    threads: int | None = None
    top: int = 10
    seed: int = 0  # of the input buffers (the timed runs' seeds)
    buffers: int = 4

    def __post_init__(self) -> None:
        for flag, value, floor in (("--runs", self.runs, 1), ("--warmup", self.warmup, 0), ("--batch", self.batch, 1),
                                   ("--top", self.top, 1), ("--threads", self.threads, 1)):
            if value is not None and value < floor:
                raise DeployError(f"{flag} must be at least {floor}, not {value}")


def artifact_nodes(folder: Path, manifest: Manifest) -> list[NodeInfo]:
    """The ONNX nodes the engine was built from: its node map, else the engine itself if it is ONNX."""
    if manifest.onnx and manifest.onnx.node_map and (Path(folder) / manifest.onnx.node_map).is_file():
        return read_node_map(Path(folder) / manifest.onnx.node_map)
    engine = Path(folder) / manifest.engine.files[0]
    if engine.suffix == ".onnx":
        return node_table(onnx.load(str(engine), load_external_data=False))
    return []


def model_macs(name: str, batch: int) -> dict[Group, int]:
    """MACs per module group at `batch` of the zoo variant `name`, counted on the meta device."""
    from models.complexity import macs_by_module, meta_model, module_classes

    info = models.get_model_info(name)
    model = meta_model(info.name)
    return classify_macs(macs_by_module(model, info.input_size, batch), lambda path: module_classes(model, path))


def artifact_macs(folder: Path, manifest: Manifest, batch: int) -> dict[Group, int]:
    """MACs per module group at `batch`, from the table the export stage wrote into the artifact (artifacts
    from before it existed: recounted from the zoo variant they name)."""
    path = Path(folder) / MODULE_MACS
    if not path.is_file():
        return model_macs(manifest.model.name, batch)
    table = read_module_macs(path)
    per_batch: Mapping[str, Mapping[str, int]] = {module: {op: n * batch for op, n in entry.macs.items()}
                                                  for module, entry in table.items()}
    return classify_macs(per_batch, lambda module: table[module].classes if module in table else ())


def profile_runner(runner: Runner, manifest: Manifest, folder: Path, settings: ProfileSettings,
                   timed_ms: float | None = None) -> LayerProfile:
    """Profile an active runner's engine (in a profiling engine of its own) and attribute it."""
    table = artifact_nodes(folder, manifest)
    input_name = runner.input_specs[0].name if runner.input_specs else manifest.inputs[0].name
    feeds = input_feeds(input_name, tuple(int(d) for d in manifest.model.input_size), settings.batch,
                        TimingSettings(seed=settings.seed, buffers=settings.buffers))
    source = tuple(SourceNode(n.name, n.inputs, n.outputs) for n in table)
    load = _load_average()
    measured = runner.profile_layers(ProfileRequest(feeds, settings.runs, settings.warmup, source))
    profile = attribute(measured, table, artifact_macs(folder, manifest, settings.batch), settings.batch, settings.top)
    load = max(load, _load_average())
    cores = os.cpu_count() or 0
    if cores and load > cores:
        profile.notes.append(f"the 1-minute load average reached {load:.1f} on {cores} cores: other processes competed "
                             "for the CPU, so these times are inflated and time spent descheduled shows as time "
                             "outside nodes; profile again on a quiet machine")
    if not table:
        profile.notes.append("the artifact has no ONNX node map, so its nodes cannot be attributed to modules: it "
                             "was built from PyTorch (op types and nodes above still hold), or exported before "
                             "profiles existed (re-export it)")
    profile.timed_ms = timed_ms
    if timed_ms and abs(profile.total_ms / timed_ms - 1) > COVERAGE_TOLERANCE:
        profile.notes.append(f"the profiled inference took {profile.total_ms:.3f} ms against {timed_ms:.3f} ms timed "
                             "(p50): the profiler's own bookkeeping, or contention, changed the run")
    return profile


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def profile_artifact(folder: Path, settings: ProfileSettings,
                     options: Mapping[str, object] | None = None) -> LayerProfile:
    """`python -m deploy profile ARTIFACT_DIR`: load the artifact (with `options` over its runtime options),
    profile it, attribute it."""
    runner, manifest = load_artifact(Path(folder), threads=settings.threads, options=options)
    reason = runner.profiling_unavailable()
    if reason:
        raise ProfilingUnavailableError(f"{manifest.target}: {reason}")
    with runner:
        return profile_runner(runner, manifest, Path(folder), settings)


def write_profile(path: Path, profile: LayerProfile) -> None:
    write_json_atomic(Path(path), PROFILE.dump_python(profile, mode="json"))


@dataclass
class _Tally:
    """Time, runtime nodes and MACs per module group, and the wholes their shares are taken of."""

    times: dict[Group, float]
    counts: dict[Group, int]
    macs: dict[Group, int]
    total_ms: float

    def share(self, name: str, groups: Iterable[Group], area: str | None = None) -> Share:
        chosen = list(groups)
        time_ms = sum(self.times.get(g, 0.0) for g in chosen)
        macs = sum(self.macs.get(g, 0) for g in chosen)
        whole = sum(self.macs.values())
        return Share(name, time_ms, time_ms / self.total_ms if self.total_ms else 0.0, macs,
                     macs / whole if whole else 0.0, sum(self.counts.get(g, 0) for g in chosen), area)


def attribute(measured: RuntimeProfile, table: list[NodeInfo], macs: dict[Group, int], batch: int,
              top: int = 10) -> LayerProfile:
    """A runtime profile attributed to module groups; MACs aligned with what the runtime ran."""
    groups = classify_nodes(table)
    ops = {n.name: n.op_type for n in table}
    placed = [(node, runtime_group(node.source_nodes, groups, ops)) for node in measured.nodes]
    tally = _Tally({}, {}, {}, measured.total_ms)
    for node, group in placed:
        tally.times[group] = tally.times.get(group, 0.0) + node.time_ms
        tally.counts[group] = tally.counts.get(group, 0) + 1
    tally.macs = _aligned(macs, tally.times)
    order = _unit_order(groups.values(), tally.times, tally.macs)
    keys = sorted(set(tally.times) | set(tally.macs), key=lambda g: (order.index(g.unit), list(PARTS).index(g.part)))
    total = measured.total_ms
    nodes = [NodeShare(n.name, n.op_type, n.time_ms, n.time_ms / total if total else 0.0, g.label, n.kernel,
                       list(n.source_nodes)) for n, g in placed]
    slowest = sorted(nodes, key=lambda n: -n.time_ms)
    unassigned = [n for n in slowest if n.group == OTHER.label]
    return LayerProfile(
        runtime=measured.runtime, batch=batch, runs=measured.runs, total_ms=total, node_ms=measured.node_ms,
        coverage=measured.node_ms / total if total else 0.0, macs=sum(tally.macs.values()),
        parts=[tally.share(p, [g for g in keys if g.part == p], PARTS[p][0]) for p in PARTS
               if any(g.part == p for g in keys)],
        units=[tally.share(u, [g for g in keys if g.unit == u]) for u in order if any(g.unit == u for g in keys)],
        op_types=_op_types(placed, total),
        top_nodes=[NodeShare(n.name, n.op_type, n.time_ms, n.time_share, n.group, n.kernel) for n in slowest[:top]],
        unassigned=[n.name for n in unassigned],
        notes=[*measured.notes, *_coverage_notes(measured.node_ms, total, unassigned)],
        threads=measured.threads,
        groups=[tally.share(g.label, [g], PARTS[g.part][0]) for g in keys],
        nodes=nodes)


def _aligned(macs: dict[Group, int], times: dict[Group, float]) -> dict[Group, int]:
    """A fused attention op that ran an attention's qkv, scores, softmax or context carries their MACs too."""
    aligned = dict(macs)
    for fused in [g for g in times if g.part == "attention"]:
        for part in ABSORBABLE:
            absorbed = Group(fused.unit, part)
            if absorbed in aligned and absorbed not in times:
                aligned[fused] = aligned.get(fused, 0) + aligned.pop(absorbed)
    return aligned


def _unit_order(graph_groups: Iterable[Group], times: dict[Group, float], macs: dict[Group, int]) -> list[str]:
    order = list(dict.fromkeys(g.unit for g in graph_groups if g != OTHER))
    for group in [*times, *macs]:
        if group.unit not in order and group != OTHER:
            order.append(group.unit)
    return [*order, OTHER.unit]


def _op_types(placed: list[tuple[NodeTime, Group]], total_ms: float) -> list[Share]:
    """Time per runtime op type, slowest first."""
    by_op: dict[str, list[float]] = {}
    for node, _ in placed:
        by_op.setdefault(node.op_type, []).append(node.time_ms)
    shares = [Share(op, sum(ts), sum(ts) / total_ms if total_ms else 0.0, nodes=len(ts)) for op, ts in by_op.items()]
    return sorted(shares, key=lambda s: -s.time_ms)


def _coverage_notes(node_ms: float, total: float, unassigned: list[NodeShare]) -> list[str]:
    notes = []
    coverage = node_ms / total if total else 0.0
    if coverage < 1 - COVERAGE_TOLERANCE:
        notes.append(f"the runtime's nodes account for {coverage:.0%} of the profiled inference ({node_ms:.3f} of "
                     f"{total:.3f} ms): the rest is spent outside nodes (the runtime's per-inference dispatch, input "
                     "and output copies, the profiler's bookkeeping), which weighs more the smaller the model")
    elif coverage > 1 + COVERAGE_TOLERANCE:
        notes.append(f"the nodes' times add up to {coverage:.0%} of the profiled inference: the runtime ran nodes "
                     "concurrently, so their times overlap")
    if unassigned:
        spent = sum(n.time_ms for n in unassigned)
        notes.append(f"{len(unassigned)} runtime node(s) ({spent:.3f} ms) named no ONNX node and count as other: "
                     + ", ".join(n.name for n in unassigned[:5]) + (" ..." if len(unassigned) > 5 else ""))
    return notes


def _ratio(share: Share) -> str:
    return f"{share.time_share / share.mac_share:5.2f}" if share.mac_share >= 0.005 else "    -"


def format_profile(profile: LayerProfile, title: str = "") -> str:
    """The profile as the terminal shows it: parts and units with latency share next to MAC share."""
    threads = f", {profile.threads} threads" if profile.threads else ""
    lines = [f"{title}{profile.runtime}, batch {profile.batch}{threads}: {profile.runs} profiled runs, "
             f"{profile.total_ms:.3f} ms per inference, nodes {profile.node_ms:.3f} ms ({profile.coverage:.0%})"
             + (f"; timed p50 {profile.timed_ms:.3f} ms" if profile.timed_ms else ""),
             f"  {'part':<12} {'area':<10} {'ms':>8} {'time %':>7} {'MAC %':>6} {'time/MAC':>8} {'nodes':>5}"]
    for share in profile.parts:
        lines.append(f"  {share.name:<12} {share.area or '':<10} {share.time_ms:8.3f} {100 * share.time_share:6.1f}% "
                     f"{100 * share.mac_share:5.1f}% {_ratio(share):>8} {share.nodes:5d}")
    outside = profile.total_ms - profile.node_ms
    lines.append(f"  {'(outside nodes)':<23} {outside:8.3f} {100 * outside / profile.total_ms:6.1f}%")
    lines.append("  units: " + ", ".join(f"{u.name} {100 * u.time_share:.1f}% ({100 * u.mac_share:.1f}% MACs)"
                                         for u in profile.units))
    lines.append("  op types: " + ", ".join(f"{o.name} {100 * o.time_share:.1f}%" for o in profile.op_types[:8]))
    lines.append(f"  slowest {len(profile.top_nodes)} nodes:")
    lines += [f"    {n.time_ms:8.3f} ms {100 * n.time_share:5.1f}%  {n.op_type:<18} {n.group:<24} {n.name}"
              + (f"  [{n.kernel}]" if n.kernel else "") for n in profile.top_nodes]
    lines += [f"  note: {note}" for note in profile.notes]
    return "\n".join(lines)
