"""Files written so that a reader never sees half of one, and output folders proven writable up front."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .errors import OutputDirError


def ensure_writable(folder: Path, flag: str = "--out") -> Path:
    """Create `folder` if needed and prove we can write there, before any slow work; `flag` names the option."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputDirError(
            f"cannot write to output folder {folder} ({exc.strerror or exc}); pass a writable {flag}"
        ) from None
    return folder


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside `path`, fsync, then rename over it: a reader never sees half a file."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
