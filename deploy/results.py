"""Reading a bench results JSON: kept free of torch and the runtimes, so `report` and `compare` start fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DeployError

CellKey = tuple[str, str, str, int]  # (model, target, precision, batch)


def cell_key(row: dict[str, Any]) -> CellKey:
    return (row["model"], row["target"], row["precision"], int(row["batch"]))


def load_results(path: Path) -> dict[str, Any]:
    """A results JSON, with a one-line error for a missing, corrupt or foreign file."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise DeployError(f"cannot read results {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path} is not a results JSON (corrupt: {exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise DeployError(f"{path} is not a results JSON (no 'results' list)")
    return report


def format_or_dash(value: float | None, spec: str) -> str:
    """A table cell: `value` formatted with `spec`, or "-" where nothing was measured."""
    return "-" if value is None else format(value, spec)
