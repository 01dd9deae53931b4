"""The device farm on a real local Ray cluster: scheduling by label, one results file, node loss, resume, errors.

One cluster is shared by the module: a head with no bench slot and two device nodes labelled `farm-a` and
`farm-b` (two CPU profiles under different labels), every one bound to 127.0.0.1. Tests that check
scheduling use a cheap stand-in for `run_group` (it runs on the nodes, in Ray's worker processes); one
runs the real engine (hvt_digits on ONNX Runtime) remotely and compares it with a local run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.bench import BenchRequest, BenchSettings, ResultRow, ResultsFile, Resume, run_bench
from deploy.bench.device_profiles import load_profile
from deploy.bench.plan import DeviceMatrix
from deploy.bench.progress import Progress
from deploy.bench.results import CellKey
from deploy.cli import main
from deploy.cluster.connect import LABEL, SLOT, connected
from deploy.timing import LatencyStats

# One Ray cluster per module: starting and stopping it take seconds, so every test here is slow.
pytestmark = [pytest.mark.ray, pytest.mark.subprocess, pytest.mark.slow]

# Ray calls a loopback address this machine's outside address unless it believes it is on a laptop; this keeps
# the driver, the head and every node on 127.0.0.1 (it is read when Ray is imported, so it comes first).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("farm-a", "farm-b")


# ---------------------------------------------------------------- no cluster needed


def test_ray_is_imported_only_inside_the_cluster_packages_functions():
    """No module of the default install imports Ray, and deploy/cluster only does so inside functions."""
    import ast

    found = []
    for package in ("deploy", "models", "runtimes"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            top_level = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "ray" or n.startswith("ray.") for n in names):
                    found.append((path.relative_to(ROOT).parts[:2], id(node) in top_level))
    assert found, "the check sees deploy/cluster's imports"
    assert all(parts == ("deploy", "cluster") and not top for parts, top in found), found


def test_worker_prints_a_join_command_ray_accepts_and_refuses_a_wrong_device(capsys):
    assert main(["worker", "--address", "10.0.0.5:6379", "--dry-run"]) == 0
    command = capsys.readouterr().out.strip()
    assert command.startswith("ray start --address 10.0.0.5:6379 --labels vit-deploy/device=cpu ")
    assert "--resources '{\"bench_slot\": 1}' --block" in command
    if importlib.util.find_spec("ray") is not None:
        from ray._private.label_utils import parse_node_labels_string

        assert parse_node_labels_string(command.split("--labels ")[1].split()[0]) == {LABEL: "cpu"}
    assert main(["worker", "--address", "10.0.0.5:6379", "--device", "jetson", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device jetson needs a jetson device")


def test_an_unreachable_head_is_one_error_line(tmp_path, capsys):
    """Nothing listens on port 1 of this machine: one line at once (ray.init alone would retry for minutes)."""
    argv = ["bench", "hvt_digits", "--cluster", f"{LOOPBACK}:1", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = ("error: cannot reach the Ray head at 127.0.0.1:1" if importlib.util.find_spec("ray")
                else "error: --cluster needs Ray: pip install -e .[cluster]")
    assert len(err) == 1 and err[0].startswith(expected)


def test_a_doctor_timeout_that_is_not_a_positive_number_is_one_error_line(capsys):
    for bad in ("0", "-5", "nan", "inf"):
        assert main(["doctor", "--cluster", f"{LOOPBACK}:1", "--timeout", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --timeout ") and "above 0" in err[0], err


SAMPLE = ROOT / "tests" / "data" / "ray_start_block_tail.txt"  # `ray start --block` after its raylet was killed


def test_the_worker_keeps_rays_state_dumps_out_of_the_terminal():
    from deploy.cluster.worker import terminal_lines

    kept = list(terminal_lines(SAMPLE.read_text().splitlines(keepends=True)))
    text = "".join(kept)
    assert "[state-dump]" in SAMPLE.read_text() and "[state-dump]" not in text
    assert "- bytes created by worker" not in text and "- objects restored" not in text, "the object store's dump too"
    for line in ("Some Ray subprocesses exited unexpectedly:", "raylet [exit code=-9]", "BEGIN raylet.out tail",
                 "Received address and liveness notification", "END raylet.out tail", "Remaining processes will"):
        assert line in text, line
    assert len(kept) < 25 < len(SAMPLE.read_text().splitlines())


def test_the_worker_relays_its_command_without_state_dumps_unless_debug(capfd):
    from deploy.cluster.worker import relay

    argv = [sys.executable, "-c", f"import sys; sys.stdout.write(open({str(SAMPLE)!r}).read()); sys.exit(3)"]
    assert relay(argv, os.environ) == 3, "the command's own exit code"
    err = capfd.readouterr().err
    assert "raylet [exit code=-9]" in err and "[state-dump]" not in err
    assert relay(argv, os.environ, everything=True) == 3
    assert capfd.readouterr().err.count("[state-dump]") == SAMPLE.read_text().count("[state-dump]"), "--debug: all"


def test_the_report_and_compare_keep_each_device_apart(tmp_path, capsys):
    """Rows tagged with devices: one fidelity series per device, a per-device table, compare matches per device."""
    from test_report import synthetic_results

    from deploy.report.html import write_report

    data = synthetic_results({"onnxruntime": 4.0})
    rows = []
    for device, scale in (("orin", 1.0), ("mac", 0.5)):
        for row in data["results"]:
            node = {"node_id": f"{device}-node-0000", "host": f"{device}-host", "labels": {LABEL: device},
                    "device": {"profile": device, "detected": {"kinds": ["cpu"]}, "cpu": {"model": f"{device} CPU"}}}
            latency = row["latency_ms"] and {k: v * scale for k, v in row["latency_ms"].items()}
            rows.append({**row, "latency_ms": latency, "device": device, "node": node})
    data["results"] = rows
    path = tmp_path / "farm.json"
    path.write_text(json.dumps(data))
    page, text = write_report([path], tmp_path / "report")
    assert "orin: onnxruntime fp32, batch 1" in text and "mac: onnxruntime fp32, batch 1" in text
    html = page.read_text()
    assert "<h2>Devices</h2>" in html and "orin-node-00 (orin-host)" in html and "mac CPU" in html

    slower = json.loads(path.read_text())
    for row in slower["results"]:
        if row["device"] == "mac" and row["latency_ms"]:
            row["latency_ms"] = {k: v * 2 for k, v in row["latency_ms"].items()}
    (tmp_path / "slower.json").write_text(json.dumps(slower))
    assert main(["compare", str(path), str(tmp_path / "slower.json")]) == 1
    out = capsys.readouterr().out
    assert out.count("SLOWER") == 5 and all("@mac" in line for line in out.splitlines() if "SLOWER" in line)

    mac_only = {**slower, "results": [r for r in slower["results"] if r["device"] == "mac"]}
    local = {**data, "results": [{k: v for k, v in r.items() if k not in ("device", "node")}
                                 for r in data["results"] if r["device"] == "mac"]}
    for name, document in (("mac.json", mac_only), ("local.json", local)):
        (tmp_path / name).write_text(json.dumps(document))
    assert main(["compare", str(tmp_path / "local.json"), str(tmp_path / "mac.json")]) == 1
    out = capsys.readouterr().out
    assert out.count("SLOWER") == 5 and "only in" not in out, "a local run matches a one-device cluster run's cells"


# ---------------------------------------------------------------- the shared cluster


@dataclass
class Farm:
    address: str
    connection: object  # the driver's open connection (deploy.cluster.connect.Cluster)
    cluster: object
    nodes: dict[str, object]  # label -> the cluster_utils node
    node_ids: dict[str, str]  # label -> node id
    profiles: Path


def _write_profiles(folder: Path) -> Path:
    folder.mkdir()
    for name in DEVICES:
        (folder / f"{name}.toml").write_text(textwrap.dedent(f"""
            name = "{name}"
            device = "cpu"
            targets = ["torch", "onnxruntime"]
            batches = [1]
            models = ["hvt_digits"]
            [timing]
            warmup_s = 0.0
            runs = 3
        """))
    return folder


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[cluster])")
    from ray.cluster_utils import Cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in runners travel by value
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
        nodes = {label: cluster.add_node(num_cpus=1, resources={SLOT: 1}, labels={LABEL: label},
                                         node_ip_address=LOOPBACK) for label in DEVICES}
        ray.init(address=cluster.address, namespace="vit-deploy-tests", log_to_driver=False)
    except Exception as exc:  # e.g. no shared memory or ports: the only reason these tests skip
        pytest.skip(f"Ray cannot start a local cluster on this machine: {type(exc).__name__}: {exc}")
    with connected(cluster.address) as connection:  # this process's connection, as a command passes it on
        yield Farm(cluster.address, connection, cluster, nodes, {label: node.node_id for label, node in nodes.items()},
                   _write_profiles(tmp_path_factory.mktemp("farm") / "profiles"))
    ray.shutdown()
    cluster.shutdown()


def stand_in(group, context) -> list[ResultRow]:
    """run_group's stand-in: a row per batch that says which process made it; a group of deit_s takes 60 s."""
    if group.model == "deit_s":
        (context.out / f"started-{group.target}").write_text("")
        time.sleep(60)
    return [ResultRow(model=group.model, target=group.target, precision=group.precision, batch=b, status="ok",
                      latency_ms=LatencyStats.of([1.0]), runs=os.getpid(), macs=1) for b in group.batches]


class Recorder(Progress):
    """Which groups the driver dispatched; optionally Ctrl-C after some finished cells."""

    def __init__(self, interrupt_after: int | None = None):
        self.dispatched: list[tuple] = []
        self.finished = 0
        self.interrupt_after = interrupt_after

    def cell_started(self, key) -> None:
        self.dispatched.append(key)

    def cell_finished(self, row) -> None:
        self.finished += 1
        if self.finished == self.interrupt_after:
            raise KeyboardInterrupt


def _request(out: Path, models=("hvt_digits", "hvt_ti_1"), devices=DEVICES) -> BenchRequest:
    matrices = tuple(DeviceMatrix(d, models, ("torch", "onnxruntime"), (1, 2)) for d in devices)
    return BenchRequest([], [], [], BenchSettings(runs=3, warmup_s=0, device=",".join(devices)), out,
                        devices=matrices)


def _executor(farm: Farm, devices=DEVICES):
    from deploy.cluster.executor import RayExecutor

    profiles = {d: load_profile(d, [farm.profiles]) for d in devices}  # the executor needs the profile of every label
    return RayExecutor(farm.connection, profiles, run_group=stand_in, place_timeout_s=60)


def _slots_free(count: int, timeout_s: float = 15.0) -> bool:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get(SLOT, 0) >= count:
            return True
        time.sleep(0.2)
    return False


def _local_run_without_ray(argv: list[str]) -> None:
    """A plain local bench with Ray unimportable, as on the default install: it must neither need nor load it."""
    ray = sys.modules.get("ray")
    sys.modules["ray"] = None  # type: ignore[assignment]  # now `import ray` (or ray.anything) raises ImportError
    try:
        assert main(argv) == 0
    finally:
        sys.modules["ray"] = ray


@pytest.mark.slow
def test_doctor_lists_every_node_with_its_label_device_and_runtimes(farm, capsys):
    """Each node imports every runtime to answer (10-25 s of CPU alone here): three nodes on one busy 2-core
    machine need minutes, which the default 120 s deadline does not give them."""
    argv = ["doctor", "--cluster", farm.address, "--profiles", str(farm.profiles), "--json", "--timeout", "900"]
    assert main(argv) == 0
    answers = {a["node"]["labels"].get(LABEL): a for a in json.loads(capsys.readouterr().out)}
    assert set(answers) == {None, *DEVICES}, "the head and both devices"
    unanswered = {label: a["error"] for label, a in answers.items() if a["report"] is None}
    assert not unanswered, f"every node answers within the (load-proof) timeout: {unanswered}"
    assert answers[None]["label_check"].startswith("no vit-deploy/device label")
    for label in DEVICES:
        report = answers[label]["report"]
        assert report["record"]["node_id"] == farm.node_ids[label] and "cpu" in report["detected"]
        assert answers[label]["label_check"].startswith(f"ok: profile {label} (cpu)")
        runtimes = {r["target"]: r for r in report["runtimes"]}
        assert runtimes["onnxruntime"]["can_run"] and runtimes["onnxruntime"]["version"]
        assert set(runtimes) == {"torch", "onnxruntime", "openvino", "tensorrt", "coreml", "executorch"}


@pytest.mark.slow
def test_an_engine_built_and_timed_on_a_node_matches_a_local_run(farm, tmp_path):
    """The real engine (hvt_digits on ONNX Runtime), built, gated and timed on farm-a's node, equals a local run."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from results_equivalence import comparable, differences
    finally:
        sys.path.pop(0)
    common = ["hvt_digits", "--device", "farm-a", "--profiles", str(farm.profiles), "--target", "onnxruntime",
              "--batch", "1", "--runs", "3", "--warmup", "0", "--no-progress"]
    remote, local = tmp_path / "remote.json", tmp_path / "local.json"
    assert main(["bench", *common, "--cluster", farm.address, "--fetch-artifacts", "--out", str(tmp_path / "art"),
                 "--json", str(remote)]) == 0
    _local_run_without_ray(["bench", *common, "--out", str(tmp_path / "local-art"), "--json", str(local)])
    remote_doc, local_doc = json.loads(remote.read_text()), json.loads(local.read_text())
    assert remote_doc["complete"] and remote_doc["settings"] == local_doc["settings"]
    assert differences(*(comparable(d, ("node", "device"))["results"] for d in (remote_doc, local_doc))) == [], \
        "the cells equal the local run's apart from timings and node tags"
    [row] = remote_doc["results"]
    assert row["status"] == "ok" and row["parity"]["passed"] and row["runs"] == 3
    assert row["device"] == "farm-a" and row["node"]["node_id"] == farm.node_ids["farm-a"]
    assert row["node"]["labels"][LABEL] == "farm-a" and row["node"]["device"]["profile"] == "farm-a"
    fetched = tmp_path / "art" / f"farm-a@{socket.gethostname()}" / "hvt_digits" / "onnxruntime-fp32"
    assert json.loads((fetched / "manifest.json").read_text())["parity"]["passed"]
    assert _slots_free(2), "the actor gave its bench slot back"


@pytest.mark.slow
def test_a_device_no_node_has_is_one_error_line_naming_the_clusters_devices(farm, tmp_path, capsys):
    argv = ["bench", "hvt_digits", "--cluster", farm.address, "--device", "cpu", "--no-progress",
            "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no node of device cpu in the cluster")
    assert "farm-a (1 node), farm-b (1 node)" in err[0]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_an_interrupted_cluster_run_resumes_with_only_the_missing_cells(farm, tmp_path):
    path = tmp_path / "resumable.json"
    request = _request(tmp_path, devices=("farm-a",))
    with pytest.raises(KeyboardInterrupt):
        run_bench(request, ResultsFile(path), progress=Recorder(interrupt_after=3), executor=_executor(farm))
    assert _slots_free(2), "Ctrl-C killed the remote actor and freed the device's slot"
    partial = json.loads(path.read_text())
    assert partial["complete"] is False and len(partial["results"]) == 3
    done = {_key(r): r["runs"] for r in partial["results"]}

    recorder = Recorder()
    document = run_bench(request, ResultsFile(path), resume=Resume(), progress=recorder, executor=_executor(farm))
    planned = request.devices[0].cells()
    assert [row.key for row in document.results] == planned, "every cell exactly once, in plan order"
    missing = {(k.model, k.target) for k in planned if k not in done}
    assert sorted((k.model, k.target) for k in recorder.dispatched) == sorted(missing), "only the missing groups ran"
    assert {row.key: row.runs for row in document.results if row.key in done} == done, "finished cells are kept"
    assert all(row.node.node_id == farm.node_ids["farm-a"] for row in document.results)


def _key(row: dict) -> CellKey:
    return CellKey(row["model"], row["target"], row["precision"], row["batch"], row.get("device"))


# ---------------------------------------------------------------- a head started by the real `ray` CLI

REAL_LABEL = "farm-real"


@dataclass
class RayHead:
    address: str
    profiles: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _stop_process_tree(pid: int) -> None:
    """The `ray start --block` process and every process under it, by PID (`ray stop` would stop every Ray
    process on the machine, other tests' clusters included). The tree is read before any of them is signalled:
    a worker whose raylet dies first is re-parented out of it. Only the root is asked to stop: it takes its tree
    down in about 2 s here, while a SIGTERM to every process at once left the GCS, the raylet and the root itself
    running until the 20 s wait ran out (measured); whatever is left then is killed."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = [root, *root.children(recursive=True)]
    with contextlib.suppress(psutil.NoSuchProcess):
        root.terminate()
    _, alive = psutil.wait_procs(family, timeout=20)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on loopback, in Ray's local-only mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, so that every
    socket it opens is bound to 127.0.0.1), with a temp dir of its own; the head is the labelled device node,
    since that mode refuses a second `ray start` (`--address`) on the machine."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[cluster])")
    from deploy.cluster.worker import ray_executable

    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="vd-ray-", dir="/tmp"))  # Ray's socket paths must stay short
    argv = [ray_executable(), "start", "--head", "--port", str(port), "--node-ip-address", LOOPBACK,
            "--num-cpus", "1", "--labels", f"{LABEL}={REAL_LABEL}", "--resources", json.dumps({SLOT: 1}),
            "--temp-dir", str(temp), "--include-dashboard", "false", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()), "--block"]
    log_path = temp / "ray-start.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text() and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        if "Ray runtime started" not in log_path.read_text():
            pytest.skip(f"`ray start --head` did not start here: {log_path.read_text()[-800:]}")
        profiles = tmp_path_factory.mktemp("real-head") / "profiles"
        profiles.mkdir()
        (profiles / f"{REAL_LABEL}.toml").write_text(f'name = "{REAL_LABEL}"\ndevice = "cpu"\n'
                                                       'targets = ["torch", "onnxruntime"]\nbatches = [1]\n')
        yield RayHead(f"{LOOPBACK}:{port}", profiles)
    finally:
        _stop_process_tree(process.pid)
        shutil.rmtree(temp, ignore_errors=True)


def _cli(*argv: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """The command in a process of its own, in a user's environment: no Ray setting of this test module's."""
    clean = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    return subprocess.run([sys.executable, "-m", "deploy", *argv], env={**clean, **(env or {})}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.mark.slow
def test_bench_against_a_real_ray_head_on_loopback_runs_two_cells_into_one_results_file(ray_head, tmp_path):
    """`bench --cluster 127.0.0.1:PORT` against `ray start --head` bound to loopback, as a user runs it. Ray in its
    default (cluster) mode dials 127.0.0.1 as this machine's outside address, where such a head does not listen:
    this retried 20 times, printing `Failed to connect to GCS` every 40 s, before the driver followed the head."""
    results = tmp_path / "farm.json"
    done = _cli("bench", "hvt_digits", "--cluster", ray_head.address, "--device", REAL_LABEL, "--device-profiles",
                str(ray_head.profiles), "--target", "torch", "--target", "onnxruntime", "--batch", "1", "--runs", "3",
                "--warmup", "0", "--no-progress", "--out", str(tmp_path / "art"), "--json", str(results))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Failed to connect" not in done.stderr
    assert "[state-dump]" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["farm.json"], "one results file"
    document = json.loads(results.read_text())
    assert document["complete"]
    assert sorted((r["target"], r["status"]) for r in document["results"]) == [("onnxruntime", "ok"), ("torch", "ok")]
    for row in document["results"]:
        assert row["device"] == REAL_LABEL and row["node"]["labels"][LABEL] == REAL_LABEL and row["runs"] == 3


@pytest.mark.slow
def test_a_head_ray_would_dial_elsewhere_is_one_error_line_at_once(ray_head, tmp_path):
    """B2: with Ray forced into cluster mode, the loopback-only head is reachable as typed but not where Ray dials
    it: one line within seconds (it was a retry loop of 20 tries of about 40 s), and no results file."""
    dialed = "from ray._private.services import canonicalize_bootstrap_address as c; print(c('127.0.0.1:1'))"
    check = subprocess.run([sys.executable, "-c", dialed], env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"},
                           capture_output=True, text=True, timeout=120, check=False)
    if check.stdout.strip() in ("", "127.0.0.1:1"):
        pytest.skip(f"Ray dials loopback as loopback on this machine (no outside address): {check.stdout.strip()}")
    start = time.monotonic()
    done = _cli("bench", "hvt_digits", "--cluster", ray_head.address, "--device", REAL_LABEL, "--device-profiles",
                str(ray_head.profiles), "--no-progress", "--out", str(tmp_path), "--json", str(tmp_path / "r.json"),
                env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, timeout_s=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"error: the Ray head answers at {ray_head.address}, but Ray connects to it as ")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_a_process_connected_to_one_cluster_refuses_another_and_accepts_an_alias(farm, ray_head, capsys):
    """Clusters are compared by identity (the control store's cluster id), not by the address text."""
    assert main(["doctor", "--cluster", ray_head.address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"error: this process is connected to another Ray cluster (at "
                                        f"{farm.connection.gcs_address}) than the one at {ray_head.address}")
    port = farm.address.rpartition(":")[2]
    aliases = [f"localhost:{port}"]
    if socket.gethostbyname(socket.gethostname()) == LOOPBACK:  # a name Ray does not rewrite: the id decides
        aliases.append(f"{socket.gethostname()}:{port}")
    for alias in aliases:
        with connected(alias) as same:
            assert same.cluster_id == farm.connection.cluster_id and same.address == alias


@pytest.mark.slow
def test_a_port_that_is_no_ray_control_store_is_one_error_within_the_deadline():
    """A port that accepts connections and says nothing (the dashboard's, a stale forward): Ray's client retries it
    20 times for about 40 s each; the probe gives up at its deadline."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[cluster])")
    from deploy.cluster.connect import cluster_id
    from deploy.errors import DeployError

    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen()
        address = f"{LOOPBACK}:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(DeployError, match=f"no Ray control store answered at {address} in 5 s"):
            cluster_id(address, timeout_s=5)
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_a_node_that_leaves_mid_run_fails_its_cells_and_the_rest_finish(farm, tmp_path):
    """Runs last: it takes farm-b out of the shared cluster."""
    request = BenchRequest([], [], [], BenchSettings(runs=3, warmup_s=0), tmp_path, devices=(
        DeviceMatrix("farm-a", ("hvt_digits", "hvt_ti_1"), ("torch",), (1,)),
        DeviceMatrix("farm-b", ("deit_s", "hvt_digits"), ("torch",), (1, 2))))
    path, outcome = tmp_path / "lost.json", {}
    run = threading.Thread(target=lambda: outcome.update(
        document=run_bench(request, ResultsFile(path), executor=_executor(farm))))
    run.start()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("farm-b@*/started-torch")) and time.monotonic() < deadline:
        time.sleep(0.1)
    farm.cluster.remove_node(farm.nodes["farm-b"])  # the farm-b device leaves while it times deit_s
    run.join(timeout=60)
    assert not run.is_alive() and "document" in outcome
    rows = {(r.device, r.model, r.batch): r for r in outcome["document"].results}
    saved = json.loads(path.read_text())
    assert len(rows) == 2 + 4 and saved["complete"] is True
    assert saved["results"] == outcome["document"].to_json()["results"], "one results file, written as it went"
    for model in ("hvt_digits", "hvt_ti_1"):  # every cell ran on a node of its own label
        assert rows[("farm-a", model, 1)].status == "ok"
        assert rows[("farm-a", model, 1)].node.node_id == farm.node_ids["farm-a"]
        assert rows[("farm-a", model, 1)].runs != os.getpid(), "it ran in a worker process on the node"
    for batch in (1, 2):
        lost, stranded = rows[("farm-b", "deit_s", batch)], rows[("farm-b", "hvt_digits", batch)]
        assert lost.status == stranded.status == "failed"
        assert lost.error.startswith("node lost: ") and "left the cluster mid-run" in lost.error
        assert stranded.error.startswith("node lost: no farm-b node left in the cluster")
        assert lost.node.node_id == farm.node_ids["farm-b"]
