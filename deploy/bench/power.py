"""Board power on a Jetson: `tegrastats` sampled during the timed runs, averaged, and energy per image."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

from .results import PowerRecord

# The board's input rail, the best measure of what the whole module draws; older boards name it differently.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VDD_5V_IN")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line: str) -> tuple[float, str] | None:
    """(instantaneous milliwatts, rail) from one tegrastats line: the input rail, else the sum of all rails."""
    rails = {name: float(now) for name, now, _ in _RAIL.findall(line) if name not in ("RAM", "SWAP", "IRAM")}
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    if rails:
        return sum(rails.values()), "sum of " + "+".join(rails)
    return None


class PowerSampler:
    """Runs `tegrastats --interval MS` while open and averages the power it reports.

    Used around the timed runs only, so the figure (and the energy per image derived from it) is
    the board's draw while the engine is busy, not during export or warm-up.
    """

    def __init__(self, command: list[str] | None = None, interval_ms: int = 100):
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[float] = []
        self.rail: str | None = None
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    @staticmethod
    def available(command: list[str] | None = None) -> bool:
        return shutil.which((command or ["tegrastats"])[0]) is not None

    def __enter__(self) -> PowerSampler:
        try:
            self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             text=True, bufsize=1)
        except OSError as exc:
            self.error = f"cannot start {self.command[0]}: {exc}"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            parsed = parse_tegrastats(line)
            if parsed:
                self.samples.append(parsed[0])
                self.rail = parsed[1]

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self, seconds: float, images: int) -> PowerRecord:
        """Mean power over the window and the energy per image it implies."""
        if not self.samples:
            return PowerRecord(mean_w=None, samples=0, error=self.error or "tegrastats printed no power rail")
        mean_w = sum(self.samples) / len(self.samples) / 1e3
        return PowerRecord(mean_w=mean_w, samples=len(self.samples), rail=self.rail,
                           energy_mj_per_image=mean_w * seconds / max(images, 1) * 1e3)
