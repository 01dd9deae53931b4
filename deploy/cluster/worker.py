"""Joining the farm: the `ray start` line that makes this machine a device node, with a label that cannot be wrong.

The label comes from the same detection `bench --device auto` uses (or a profile of your own, refused if
this machine is not its kind of device), so a node never claims to be a device it is not.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..bench.detect import Detection
from ..bench.device_profiles import resolve_device
from ..errors import DeployError
from .connect import INSTALL, LABEL, SLOT

# Ray's rule for a label value (Kubernetes' syntax).
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
# Ray refuses multi-node clusters on macOS unless this is set (`ray start` aborts without it).
MACOS_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class JoinCommand:
    """`ray start` for a device node: its label, its one bench slot, and the environment it needs."""

    address: str
    label: str
    node_ip_address: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, ray: str = "ray") -> list[str]:
        argv = [ray, "start", "--address", self.address, "--labels", f"{LABEL}={self.label}",
                "--resources", json.dumps({SLOT: 1}), "--block"]
        return argv + (["--node-ip-address", self.node_ip_address] if self.node_ip_address else [])

    def shell(self) -> str:
        import shlex

        prefix = "".join(f"{k}={v} " for k, v in self.env.items())
        return prefix + shlex.join(self.argv())


def join_command(address: str, detection: Detection, device: str = "auto", profiles: Sequence[Path] = (),
                 node_ip_address: str | None = None) -> JoinCommand:
    """The join line for this machine; `device` names a profile, which must be this machine's kind."""
    profile = resolve_device(device, detection, list(profiles))
    if not LABEL_VALUE.fullmatch(profile.name):
        raise DeployError(f"profile name {profile.name!r} cannot be a node label: use letters, digits, '-', '_' and "
                          "'.', at most 63, starting and ending with a letter or digit")
    env = {MACOS_CLUSTER_ENV: "1"} if platform.system() == "Darwin" else {}
    return JoinCommand(address, profile.name, node_ip_address, env)


def ray_executable() -> str:
    """The `ray` command of this Python's environment (the one vit-deploy runs in), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise DeployError(f"the `ray` command is not installed here: {INSTALL}")
    return found


# `ray start`'s own log prefix ("2026-01-02 10:11:12,345<TAB>ERR scripts.py:122 -- "), in front of each of its lines.
_RAY_START_PREFIX = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+\w+ \S+ -- ")
# The lines of Ray's periodic debug dumps: the raylet's `[state-dump]` records and the object store's statistics.
_DUMP_LINE = re.compile(r".*\[state-dump\]|.*debug dump:|- [\w ./()]+: \S+$|Current usage: |\d+ pending objects of ")


def terminal_lines(lines: Iterable[str]) -> Iterator[str]:
    """`ray start --block`'s output without Ray's state dumps (they stay in the node's log files).

    When a node's process dies (a device unplugged, the raylet killed), `ray start --block` prints the last
    200 lines of its log, which are mostly the raylet's periodic state dumps: about 190 lines of queue
    counters around the few that say what happened. Blank lines inside a dump go with it.
    """
    in_dump = False
    for line in lines:
        body = _RAY_START_PREFIX.sub("", line, count=1)
        if _DUMP_LINE.match(body) or (in_dump and not body.strip()):
            in_dump = True
            continue
        in_dump = False
        yield line


def relay(argv: Sequence[str], env: Mapping[str, str], everything: bool = False) -> int:
    """Run `argv` (the join command), its output on stderr without state dumps unless `everything`; its exit code.

    Ctrl-C reaches `ray start` too (the same terminal): it stops its processes, and its last lines still come
    through before this returns 130.
    """
    process = subprocess.Popen(argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace")
    assert process.stdout is not None
    interrupted = False
    while True:
        try:
            for line in (process.stdout if everything else terminal_lines(process.stdout)):
                sys.stderr.write(line)
                sys.stderr.flush()
            break
        except KeyboardInterrupt:
            interrupted = True
    code = process.wait()
    return 130 if interrupted else code
