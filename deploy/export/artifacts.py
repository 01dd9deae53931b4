"""Artifact folders: built in a hidden staging folder, promoted by rename, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DeployError

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


def artifact_dir(out: Path, model: str, target: str, precision: str) -> Path:
    return Path(out) / model / f"{target}-{precision}"


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
