"""Files written so that a reader never sees half of one, output folders proven writable up front, and one
writer at a time per file.

- `write_text_atomic` writes beside the target, fsyncs and renames over it. If anything fails (a full disk,
  a folder where the file should be) the temporary file is removed, the previous version stays whole, and
  the failure is one `WriteError` naming the file.
- `exclusive(path)` holds a file for a whole run, so that two processes rewriting the same file in turn
  cannot drop each other's content: the second is refused at once, naming the holder's pid. It is an
  `fcntl.flock` on a hidden `.NAME.lock` beside the file (the file itself cannot carry the lock: each
  atomic write replaces its inode), removed when released. The same primitive as `artifacts.promote`'s
  folder lock; the `filelock` package (pulled in by torch) would add soft-lock fallbacks and Windows
  support that a POSIX-only tool does not use, and it keeps its lock files behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DeployError, OutputDirError


class WriteError(DeployError):
    """A file could not be written (nothing half-written was left); `errno` says why, as OSError's does."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


class BusyError(DeployError):
    """Another process holds the file (`exclusive`)."""


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
    """Write beside `path`, fsync, then rename over it: a reader never sees half a file, a failure leaves none."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_error(path: Path, exc: OSError) -> WriteError:
    """One line for a failed write of `path`: a full disk says so, anything else names the system's reason."""
    if exc.errno == errno.ENOSPC:
        return WriteError(f"no space left on the device holding {path.parent} while writing {path.name} "
                          "(nothing half-written was left; any previous version is intact): free some space",
                          exc.errno)
    if Path(path).is_dir():
        return WriteError(f"cannot write {path}: it is a folder, not a file", exc.errno)
    return WriteError(f"cannot write {path}: {exc.strerror or exc}", exc.errno)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold `path` for the block; `BusyError` at once if another process holds it (no waiting)."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(lock, exc) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            raise BusyError(f"{path} is being written by another process (pid {holder})") from None
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(descriptor)):
            break
        os.close(descriptor)  # its holder removed it between our open and our lock: take the new one
    try:
        with contextlib.suppress(OSError):  # the pid only informs a refused second writer; a full disk may refuse it
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # before unlocking, so a waiter on this inode sees it is stale (above)
        os.close(descriptor)
