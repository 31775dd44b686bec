"""Writing files so that nothing is ever half-written: every file the library makes goes through `atomic_write`.

The bytes go to a hidden temporary file in the target's folder, are flushed and fsynced, and then either
replace the target in one rename (`overwrite=True`) or are hard-linked to it, which fails if the target
exists (`overwrite=False`: "create if absent", atomic even when several writers race for one name).
A reader therefore sees the old file or the new one, never a mixture, even if the writer is killed.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of `data` (bytes or a contiguous array) at `offset` of the open file `fd`."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def atomic_write(path: str | os.PathLike, data: bytes, *, overwrite: bool = True, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically. Without `overwrite`, raise FileExistsError if `path` exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; these files are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # raises FileExistsError when the name is taken
            os.unlink(tmp)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | os.PathLike, obj, *, overwrite: bool = True) -> Path:
    """`obj` as indented JSON (no NaN: strict JSON), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=1, allow_nan=False).encode(), overwrite=overwrite)
