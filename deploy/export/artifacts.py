"""Artifact folders: built in a hidden staging folder, promoted by rename, never half-written, checked on load.

- Hidden work folders (`.work-*`, `.bench-onnx-*`, `.<name>.staging-*`, `.<name>.old-*`) carry their
  owner's pid and process start time in their name. `sweep` removes those whose owner is gone (a run
  killed with `kill -9` cannot clean up after itself); the next run sweeps before it starts.
- `promote` holds an exclusive `flock` on the model folder, so concurrent exports of the same artifact
  serialise instead of racing on the rename (and no lock file is left behind).
- Integrity covers every file a runner or a profile reads. `engine_hashes` records every engine file's
  sha256 in the manifest (a package folder such as `.mlpackage` is hashed over its files' names and bytes),
  and the node map's beside its name; `verify_files` refuses an artifact whose files changed since. The
  manifest itself is covered by `manifest.sha256` beside it: the sha256 of its canonical JSON (keys sorted,
  no whitespace), over whatever fields it holds, so a manifest gaining fields needs no change here.
  `read_manifest` checks it before anything in the manifest is used. Either mismatch is an `IntegrityError`
  naming the file (the CLI exits 1: a refused load).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeployError, IntegrityError
from .manifest import Manifest, parse_manifest

MANIFEST = "manifest.json"
DIGEST = "manifest.sha256"
_OWNED = re.compile(r"^\.(?:.+\.(?:staging|old)|work|bench-onnx)-(?P<pid>\d+)-(?P<start>\d+)-")


def artifact_dir(out: Path, model: str, target: str, precision: str) -> Path:
    return Path(out) / model / f"{target}-{precision}"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # elsewhere: alive or not, without a start time to tell pid reuse apart
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag() -> str:
    """`<pid>-<start time>`: what a hidden folder's name says about the process that made it."""
    return f"{os.getpid()}-{_start_time(os.getpid()) or 0}"


def owned_prefix(kind: str) -> str:
    """A hidden folder prefix for `tempfile` that `sweep` can trace back to this process."""
    return f".{kind}-{owner_tag()}-"


@dataclass(frozen=True)
class Swept:
    folders: int
    bytes: int


def _orphaned(name: str) -> bool:
    match = _OWNED.match(name)
    if not match:
        return False
    started = _start_time(int(match["pid"]))
    return started is None or (started != 0 and started != int(match["start"]))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def sweep(out: Path) -> Swept:
    """Remove the hidden folders of runs that are gone, in `out` and its model folders; what was freed."""
    folders, freed = 0, 0
    candidates = [p for p in Path(out).iterdir()] if Path(out).is_dir() else []
    candidates += [p for d in candidates if d.is_dir() and not d.name.startswith(".") for p in d.iterdir()]
    for path in candidates:
        if path.is_dir() and _orphaned(path.name):
            try:
                size = _size(path)
                shutil.rmtree(path)
            except OSError:
                continue  # another sweeper got there first, or it is not ours to remove
            folders, freed = folders + 1, freed + size
    return Swept(folders, freed)


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `final`; removed if the block fails, else left for `promote`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".{final.name}.staging-{owner_tag()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def promote(stage: Path, final: Path) -> Path:
    """Replace `final` by `stage`: readers see the old folder or the new one, never a mix."""
    with _locked(final.parent):
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{owner_tag()}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (flock on its descriptor): no lock file is left behind."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a package folder's relative file names and bytes (in sorted order)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def engine_hashes(folder: Path, files: Sequence[str]) -> dict[str, str]:
    return {name: file_sha256(Path(folder) / name) for name in files}


def served_files(manifest: Manifest) -> dict[str, str | None]:
    """Every file of the artifact a runner or a profile reads, with its recorded sha256 (None: not recorded)."""
    files: dict[str, str | None] = {name: manifest.engine.sha256.get(name) for name in manifest.engine.files}
    if manifest.onnx and manifest.onnx.node_map:
        files[manifest.onnx.node_map] = manifest.onnx.node_map_sha256
    files.update(manifest.files)
    return files


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files are missing or differ from what the manifest recorded."""
    for name, recorded in served_files(manifest).items():
        path = Path(folder) / name
        if not path.exists():
            raise IntegrityError(f"{path} is missing; the artifact is incomplete: re-run export")
        if recorded is None:
            raise IntegrityError(f"{folder}/{MANIFEST} records no sha256 for {name}; re-run export")
        actual = file_sha256(path)
        if actual != recorded:
            raise IntegrityError(f"{path} does not match its manifest (sha256 {recorded[:16]}... recorded, "
                                 f"{actual[:16]}... now): the file was modified or corrupted; re-run export")


def manifest_digest(data: Any) -> str:
    """sha256 of a manifest's canonical JSON: keys sorted, no whitespace, ASCII (whatever fields it holds)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """`manifest.json`, then its digest beside it (both in the staging folder, promoted together)."""
    from ..fileio import json_default, write_text_atomic

    text = json.dumps(manifest.to_json(), indent=2, default=json_default) + "\n"
    write_text_atomic(Path(folder) / MANIFEST, text)
    write_text_atomic(Path(folder) / DIGEST, manifest_digest(json.loads(text)) + "\n")


def read_manifest(folder: Path) -> Manifest:
    """The artifact's manifest, refused (`IntegrityError`) unless it is what its export wrote."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DeployError(f"{folder} has no {MANIFEST}: not an artifact folder (re-run export)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path} is corrupt ({exc}); re-run export") from None
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check_digest(Path(folder), data)
    return parse_manifest(data, str(path))


def _check_digest(folder: Path, data: Any) -> None:
    path = folder / DIGEST
    try:
        recorded = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise IntegrityError(f"{folder} has no {DIGEST}, so its {MANIFEST} cannot be checked (written by an older "
                             "vit-deploy, or not by export); re-run export") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"cannot read {path} ({exc}); re-run export") from None
    actual = manifest_digest(data)
    if actual != recorded:
        raise IntegrityError(f"{folder / MANIFEST} does not match its digest in {DIGEST} (sha256 {recorded[:16]}... "
                             f"recorded, {actual[:16]}... now): the manifest was modified or corrupted; re-run export")
