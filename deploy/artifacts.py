"""Artifact folders: built in a hidden staging folder, promoted by rename, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DeployError, OutputDirError

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


def artifact_dir(out: Path, model: str, target: str, precision: str) -> Path:
    return Path(out) / model / f"{target}-{precision}"


def ensure_writable(folder: Path) -> Path:
    """Create `folder` if needed and prove we can write there, before any slow work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputDirError(
            f"cannot write to output folder {folder} ({exc.strerror or exc}); pass a writable --out"
        ) from None
    return folder


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `final`; removed if the block fails, else left for `promote`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def promote(stage: Path, final: Path) -> Path:
    """Replace `final` by `stage`: readers see the old folder or the new one, never a mix."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DeployError(f"{folder} has no {MANIFEST}: not an artifact folder (re-run export)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path} is corrupt ({exc}); re-run export") from None
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise DeployError(f"{path} has schema {manifest.get('schema')!r}, expected {MANIFEST_SCHEMA}")
    return manifest
